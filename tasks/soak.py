"""Stage ``soak``: energy per inference of a compiled artifact on a device, measured the MLPerf Power way.

    python -m tasks.soak --variant ptq8 --device local --compiled artifacts/compile/ptq8 \
        --checkpoint .greenpipe/soak/ptq8-local --out artifacts/soak/ptq8-local \
        --metrics metrics/soak/ptq8-local.json [--report-partial]

Idle baseline, load, warm-up, then ``soak.duration_s`` of back-to-back runs of
the artifact on a fixed ``batch x 3 x N x N`` input (N = ``deploy.input_size``)
while the device's meter (``deploy.devices.<device>.meter``) is sampled at
``soak.sample_hz``; see :mod:`greenpipe.power.soak` for the loop.  Every
finished window goes to ``<checkpoint>/timeseries.jsonl`` (fsync'd; kept
outside the DVC output because DVC deletes outputs before it reruns a stage)
and, when ``soak.store.bucket`` or ``GREENPIPE_SOAK_BUCKET`` names a bucket, to
the S3 result store.  A killed soak resumes from the checkpoint when run
again; ``--report-partial`` reports what the checkpoint holds, marked
``"partial": true``, without running anything.  On completion the time series
moves into ``--out``.

Every power figure names its meter (``meter``: name, scope, what, measured);
numbers from the ``estimate`` meter are labelled ESTIMATE everywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from greenpipe.compile import compiled_artifact
from greenpipe.errors import GreenpipeError
from greenpipe.io import write_json
from greenpipe.params import DeviceParams, Params
from greenpipe.power import available, open_meter
from greenpipe.power.base import Meter
from greenpipe.power.soak import Checkpoint, SoakPlan, run_soak, soak_key, summarize
from tasks._cli import run_stage

SERIES_FILE = "timeseries.jsonl"
BUCKET_ENV = "GREENPIPE_SOAK_BUCKET"


def plan_of(params: Params) -> SoakPlan:
    s = params.soak
    return SoakPlan(s.idle_s, s.warmup_s, s.duration_s, s.window_s, s.sample_hz,
                    s.overhead_pairs, s.overhead_block_s)


def choose_meter(dev: DeviceParams) -> tuple[str, dict, str | None]:
    """``(meter name, options, note)``: ``auto`` picks rapl when it is readable here, else estimate.

    ``pid: self`` in ``meter_options`` (the estimate meter) becomes this process's pid: on a machine
    shared with other work the whole-machine estimate would charge their CPU time to the soak.
    """
    if dev.meter != "auto":
        options = dict(dev.meter_options)
        if options.get("pid") == "self":
            options["pid"] = os.getpid()
        return dev.meter, options, None
    ok, why = available("rapl")
    if ok:
        return "rapl", {}, "meter: auto chose rapl (readable here)"
    return "estimate", {}, f"meter: auto fell back to estimate because RAPL is not readable here: {why}"


def clock_note(meter_name: str) -> str:
    if meter_name == "wallmeter":
        return ("power from an external wall meter's log, aligned to the soak windows by wall clock "
                "(time.time() here vs the meter's timestamps): the two clocks must agree (NTP); "
                "their offset is not measured")
    return "meter read in this process: power samples and inference timings on the same monotonic clock"


def _publisher(params: Params, run_id: str):
    """``(publish(record), status)``: puts each record in the S3 result store, or None when off."""
    cfg = params.soak.store
    bucket = cfg.bucket or os.environ.get(BUCKET_ENV, "")
    status = {"bucket": bucket or None, "prefix": cfg.prefix, "run_id": run_id, "put": 0, "errors": 0,
              "first_error": None}
    if not bucket:
        return None, status
    from greenpipe.store import ArtifactStore

    store = ArtifactStore(bucket, prefix=cfg.prefix, endpoint_url=cfg.endpoint or None)
    count = {"n": 0}

    def publish(record: dict) -> None:
        name = f"{count['n']:05d}-{record['kind']}.json"
        count["n"] += 1
        try:
            store.put_json(store.result_key(run_id, name), record)
            status["put"] += 1
        except GreenpipeError as err:  # the local checkpoint is the record; a store outage must not end a soak
            status["errors"] += 1
            status["first_error"] = status["first_error"] or str(err)

    return publish, status


def _meter_fields(meter: Meter, note: str | None) -> dict:
    info = meter.describe()
    label = info.what if not info.measured else f"measured: {info.what}"
    return {
        "meter": {"name": info.name, "scope": info.scope, "what": info.what, "measured": info.measured,
                  "units": info.units, "resolution": info.resolution},
        "power_measured": info.measured,
        "power_source": label,
        "meter_note": note,
        "clock": clock_note(info.name),
    }


def soak_stage(params: Params, variant: str, device: str, compiled_dir: Path, checkpoint_dir: Path, out: Path,
               report_partial: bool = False) -> dict:
    """Run, resume or (``report_partial``) just report the soak of ``variant`` on ``device``; return the metrics."""
    devices = params.deploy.devices
    if device not in devices:
        raise GreenpipeError(f"--device {device}: not in deploy.devices (params.yaml has: {', '.join(devices)})")
    dev = devices[device]
    if dev.host != "local":
        raise GreenpipeError(
            f"deploy.devices.{device}.host = {dev.host!r}: a soak on a remote host needs the device agent "
            "(a Prefect worker on that host that runs the artifact, samples its meter and reports back), "
            "which is not built yet; set host: local to soak the device in this process"
        )
    plan = plan_of(params)
    checkpoint = Checkpoint(Path(checkpoint_dir) / SERIES_FILE)
    if report_partial:
        records = checkpoint.read()
        if not records:
            raise GreenpipeError(
                f"--report-partial: {checkpoint.path} holds no soak in progress; nothing to report (run the "
                f"soak first; a completed soak's series and metrics are in {out})"
            )
        metrics = {**records[0]["context"], **summarize(records, plan)}
        metrics["partial"] = True  # reported before the soak finished, whatever the windows say
        write_json(Path(out) / "partial.json", metrics)
        return metrics

    compiled, artifact = compiled_artifact(compiled_dir, variant, dev.target)
    n = params.deploy.input_size
    if n % compiled["multiple"]:
        raise GreenpipeError(f"deploy.input_size = {n}: must be a multiple of {compiled['multiple']} for this model")
    shape = (dev.batch, int(compiled["model_args"].get("in_channels", 3)), n, n)

    meter_name, options, note = choose_meter(dev)
    identity = {"variant": variant, "device": device, "artifact_size": artifact.stat().st_size,
                "artifact_mtime_ns": artifact.stat().st_mtime_ns, "shape": shape, "threads": params.base.threads,
                "runtime": dev.runtime, "meter": meter_name, "meter_options": dict(dev.meter_options),  # as written: pid: self
                "plan": {k: v for k, v in plan.to_dict().items() if not k.startswith("overhead")}}
    key = soak_key(identity)
    publish, store_status = _publisher(params, f"soak-{variant}-{device}-{key}")
    desc: dict = {}

    def load_workload():
        from greenpipe.runtime import load

        runner = load(dev.runtime, artifact, params.base.threads, dev.batch)
        desc.update(runner.describe())
        x = np.random.default_rng(0).random(shape, dtype=np.float32)  # fixed input: only timing matters
        batch = shape[0]

        def run_once() -> int:
            runner.run(x)
            return batch

        return run_once

    with open_meter(meter_name, **options) as meter:
        context = {"variant": variant, "device_name": device, "target": dev.target, "input_shape": list(shape),
                   "batch": dev.batch, "artifact": str(artifact), **_meter_fields(meter, note)}
        header = {"key": key, "identity": identity, "context": context}

        def progress(msg: str) -> None:
            print(f"soak {variant}@{device}: {msg}", file=sys.stderr, flush=True)

        result = run_soak(load_workload, meter, plan, checkpoint, header, publish, progress)
    context = checkpoint.read()[0]["context"]  # the first run's, when resumed
    host = desc.get("host", "local CPU")
    metrics = {**context, **result, "source": f"soak on {host}, {desc.get('label', dev.runtime)}; "
                                              f"power: {context['power_source']}",
               "device": {**desc, "device": device, "kind": dev.kind}, "store": store_status}
    if publish is not None:
        publish({"kind": "metrics", **metrics})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.move(str(checkpoint.path), out / SERIES_FILE)  # complete: the series becomes the stage's output
    shutil.rmtree(checkpoint.path.parent, ignore_errors=True)
    write_json(out / "soak.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True, help="key under quantize.variants")
    ap.add_argument("--device", required=True, help="key under deploy.devices")
    ap.add_argument("--compiled", type=Path, required=True, help="compile stage outputs of the variant (all targets)")
    ap.add_argument("--checkpoint", type=Path, required=True,
                    help="directory for the in-progress time series (outside the DVC output, so it survives a rerun)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--report-partial", action="store_true",
                    help="report what the checkpoint holds, marked partial, without running")
    args = ap.parse_args(argv)

    run_stage(
        lambda params: soak_stage(params, args.variant, args.device, args.compiled, args.checkpoint, args.out,
                                  args.report_partial),
        args.params,
        args.metrics,
    )


if __name__ == "__main__":
    main()
