"""Stage ``deploy``: run a compiled artifact on a device, score it on val and benchmark it with LoadGen.

    python -m tasks.deploy --variant ptq8 --device local --compiled artifacts/compile/ptq8 \
        --data artifacts/prepared --out artifacts/deploy/ptq8-local --metrics metrics/deploy/ptq8-local.json

``deploy.devices.<device>`` names the compile target whose artifact the
device runs and the runtime that runs it (greenpipe/runtime/).  What is
measured is the artifact itself: PSNR/SSIM of its outputs on the val split,
then MLPerf LoadGen SingleStream (latency percentiles) and Offline
(throughput) on ``1 x C x N x N`` inputs, N = ``deploy.input_size``.

Outputs: ``eval.json`` (per-image rows), ``bench.json`` (LoadGen results and
settings), ``loadgen/<scenario>/`` (LoadGen's own logs) and ``samples/*.png``
(a few denoised val crops for the report).  Only devices run in-process
(``local``) are supported here; remote device hosts are a later feature.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from greenpipe.bench.loadgen import benchmark
from greenpipe.compile import compiled_artifact
from greenpipe.data.prepared import center_crop
from greenpipe.errors import GreenpipeError
from greenpipe.io import write_image, write_json
from greenpipe.params import Params
from greenpipe.recipes import get_recipe
from greenpipe.runtime import load
from tasks._cli import run_stage

SAMPLE_IMAGES = 3
SAMPLE_CROP = 256  # px


def _source(desc: dict) -> str:
    return f"measured on {desc['host']}, {desc['label']}"


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
    if dev.host != "local":
        raise GreenpipeError(
            f"deploy.devices.{device}.host = {dev.host!r}: remote hosts need the device agent (a Prefect "
            "worker on that host that receives the artifact and reports back), which this version does not "
            "have yet; set host: local to run the device in this process"
        )
    compiled, artifact = compiled_artifact(compiled_dir, variant, dev.target)
    runner = load(dev.runtime, artifact, params.base.threads, dev.batch)
    desc = {**runner.describe(), "device": device, "kind": dev.kind, "target": dev.target}

    recipe = get_recipe(compiled["recipe"])
    multiple = compiled["multiple"]
    outputs: dict[str, np.ndarray] = {}
    quality = recipe.evaluate(
        runner.run, data_dir, params.deploy.eval_max_side, multiple=multiple, outputs=outputs
    )
    source = _source(desc)
    write_json(
        out / "eval.json",
        {
            "variant": variant,
            "device_name": device,
            "artifact": str(artifact),
            "max_side": params.deploy.eval_max_side,
            "summary": {k: quality[k] for k in ("psnr", "ssim", "noisy_psnr", "images")},
            "per_image": quality["per_image"],
            "source": f"deployed artifact on val, {source}",
        },
    )
    for name in sorted(outputs)[:SAMPLE_IMAGES]:
        write_image(out / "samples" / f"{name}.png", center_crop(outputs[name], SAMPLE_CROP))

    n = params.deploy.input_size
    if n % multiple:
        raise GreenpipeError(f"deploy.input_size = {n}: must be a multiple of {multiple} for this model")
    channels = int(compiled["model_args"].get("in_channels", 3))
    shape = (1, channels, n, n)
    bench = benchmark(
        runner,
        shape,
        params.deploy.single_stream_s,
        params.deploy.offline_s,
        out / "loadgen",
        batch=dev.batch,
        seed=0,  # fixed rather than base.seed: the inputs only carry timing; keeps base.seed out of the deps
    )
    write_json(out / "bench.json", {**bench, "device": desc, "source": source})
    return {
        "variant": variant,
        "device_name": device,
        "target": dev.target,
        "psnr": quality["psnr"],
        "ssim": quality["ssim"],
        "noisy_psnr": quality["noisy_psnr"],
        "images": quality["images"],
        "p50_ms": bench["p50_ms"],
        "p90_ms": bench["p90_ms"],
        "p99_ms": bench["p99_ms"],
        "fps": bench["fps"],
        "loadgen_valid": bench["valid"],
        "loadgen_validity": bench["validity"],
        "input_shape": list(shape),
        "batch": dev.batch,
        "model_mb": artifact.stat().st_size / 1e6,
        "device": desc,
        "source": source,
    }


def main(argv: list[str] | None = None) -> None:
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
