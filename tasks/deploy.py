"""Stage ``deploy``: run a compiled artifact on a device, score it on val and benchmark it with LoadGen.

    python -m tasks.deploy --variant ptq8 --device local --compiled artifacts/compile/ptq8 \
        --data artifacts/prepared --out artifacts/deploy/ptq8-local --metrics metrics/deploy/ptq8-local.json

``deploy.devices.<device>`` names the compile target whose artifact the
device runs and the runtime that runs it (greenpipe/runtime/).  What is
measured is the artifact itself: the recipe's metrics of its outputs on the val split,
then MLPerf LoadGen SingleStream (latency percentiles) and Offline
(throughput) on queries of the recipe's benchmark input (``bench_input``;
``deploy.input_size`` where the model takes any size).  A per-kernel
variant (``kernels.json``) runs on its recipe's host loop.

Outputs: ``eval.json`` (per-sample rows), ``bench.json`` (LoadGen results and
settings), ``loadgen/<scenario>/`` (LoadGen's own logs) and ``samples/*.png``
(a few val outputs, as the recipe writes them, for the report).  With ``deploy.self_ensemble`` =
n > 1 the artifact is scored and benchmarked a second time as an n-pass
self-ensemble (greenpipe/runtime/ensemble.py: the mean of its outputs over n
flips / rotations of the input); those figures go under ``self_ensemble`` in
the metrics, ``eval.json`` and ``bench.json``, with LoadGen's logs under
``loadgen-x<n>/`` (SingleStream only: its ``fps`` is None).

A device with ``host: local`` runs here, in this process.  Any other host is
a device host with a Prefect worker (``pool`` / ``queue`` in the catalog):
the artifact and the val split go up to the S3 artifact store, the
``device_run`` flow (flows/device_run.py) runs :func:`measure` on the host
through ``run_deployment``, and its outputs come back, checksum-verified,
into the same files as a local run's (greenpipe/farm/client.py).
:func:`~greenpipe.deploy.measure` is the measuring itself, shared by both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.bench.macs import artifact_macs
from greenpipe.deploy import compiled_artifact, deploy_job, load_artifact, measure
from greenpipe.errors import GreenpipeError
from greenpipe.params import Params


def deploy_stage(
    params: Params, variant: str, device: str, compiled_dir: Path, data_dir: Path, out: Path
) -> dict:
    """Evaluate and benchmark ``compiled_dir``'s artifact for ``device``; return the metrics."""
    devices = params.deploy.devices
    if device not in devices:
        raise GreenpipeError(
            f"--device {device}: not in deploy.devices (params.yaml has: {', '.join(devices)})"
        )
    dev = devices[device]
    compiled, artifact = compiled_artifact(compiled_dir, variant, dev.target)
    job = deploy_job(params, variant, device, compiled, artifact)
    if dev.host != "local":
        from greenpipe.farm.client import run_remote

        metrics = run_remote(job, dev, artifact, data_dir, out)
    else:
        runner = load_artifact(job.recipe, dev.runtime, artifact, params.base.threads, dev.batch)
        metrics = measure(job, runner, data_dir, out)
    return {**metrics, **artifact_macs(artifact, job.input_shape)}


def main(argv: list[str] | None = None) -> None:
    from tasks._cli import run_stage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True, help="key under quantize.variants")
    ap.add_argument("--device", required=True, help="key under deploy.devices")
    ap.add_argument(
        "--compiled", type=Path, required=True, help="compile stage outputs of the variant (all targets)"
    )
    ap.add_argument("--data", type=Path, required=True, help="prepared dataset (val split is scored)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    run_stage(
        lambda params: deploy_stage(params, args.variant, args.device, args.compiled, args.data, args.out),
        args.params,
        args.metrics,
    )


if __name__ == "__main__":
    main()
