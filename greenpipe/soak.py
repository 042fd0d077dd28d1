"""The ``soak`` stage's logic: energy per inference of a compiled artifact on a device, measured the MLPerf Power way.

Idle baseline, load, warm-up, then ``soak.duration_s`` of back-to-back runs of
the artifact on a fixed input (``batch`` x the recipe's benchmark query: ``bench_input``)
while the device's meter (``deploy.devices.<device>.meter``) is sampled at
``soak.sample_hz``; see :mod:`greenpipe.power.soak` for the loop.

**On a local device** (``host: local``) the soak runs in this process.  Every
finished window goes to ``<checkpoint>/timeseries.jsonl`` (fsync'd; kept
outside the DVC output because DVC deletes outputs before it reruns a stage)
and, when ``soak.store.bucket`` or ``GREENPIPE_SOAK_BUCKET`` names a bucket, to
the S3 result store.  A killed soak resumes from the checkpoint when run
again.  On completion the time series moves into ``--out``.

**On a remote device** the soak runs on the device host, with its meter, as a
``device_run`` job (``stage: soak``) through the same farm machinery as
``deploy@V-D`` (greenpipe/farm/client.py: checks, upload, ``run_deployment``,
watch, retries).  The host (:func:`soak_on_host`) puts every finished window in
the farm's S3 store under ``hosts/<host>/results/<flow-run-id>/soak/`` as it closes, so a
host killed mid-soak loses at most the window in progress; a retried attempt,
or the stage run again, resumes from the windows stored (same soak key).  The
flow run ids are written down in ``<checkpoint>/remote.json`` as runs start.
The series and ``soak.json`` come back only from a COMPLETED run.

``--report-partial`` reports what a soak that did not finish holds (the local
checkpoint, or for a remote device the windows its runs stored), marked
``"partial": true``, without running anything.

Every power figure names its meter (``meter``: name, scope, what, measured)
and the machine it was read on (``host``); numbers from the ``estimate`` meter
are labelled ESTIMATE everywhere; ``clock`` says whose clock stamps the series.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenpipe.deploy import DeviceJob, artifact_bytes, compiled_artifact
from greenpipe.errors import GreenpipeError
from greenpipe.io import dir_sha256, files_sha256, read_json, write_json
from greenpipe.params import DeviceParams, Params
from greenpipe.power import available, open_meter
from greenpipe.power.base import Meter, provenance
from greenpipe.power.soak import Checkpoint, Publish, SoakPlan, run_soak, soak_key, summarize
from greenpipe.quant.kernels import KERNELS_FILE

if TYPE_CHECKING:
    from greenpipe.store import ArtifactStore

SERIES_FILE = "timeseries.jsonl"
POINTER_FILE = "remote.json"  # in --checkpoint, for a remote device: the flow runs of this soak
BUCKET_ENV = "GREENPIPE_SOAK_BUCKET"
RECORD_KINDS = ("header", "idle", "window", "resume", "overhead")  # what a checkpoint holds


@dataclass(frozen=True)
class SoakJob(DeviceJob):
    """Everything a soak needs besides the artifact file."""

    recipe: str  # whose model the artifact is (a kernel manifest runs on that recipe's host loop)
    shape: list[int]  # the input the artifact runs on: batch x the recipe's benchmark query
    meter: str  # a registered meter or "auto", chosen where the soak runs
    meter_options: dict[str, Any]  # as written in params ("pid: self" is resolved where the soak runs)
    plan: dict[str, Any]  # SoakPlan.to_dict()
    artifact: str  # the artifact's path on the build host, as recorded in the results
    artifact_bytes: int
    artifact_sha256: str


def plan_of(params: Params) -> SoakPlan:
    s = params.soak
    return SoakPlan(s.idle_s, s.warmup_s, s.duration_s, s.window_s, s.sample_hz,
                    s.overhead_pairs, s.overhead_block_s)


def planned_seconds(plan: SoakPlan) -> float:
    """How long a soak with ``plan`` runs, idle to overhead blocks, s (loading the artifact not counted)."""
    overhead = 2 * plan.overhead_pairs * plan.overhead_block_s
    return plan.idle_s + plan.warmup_s + plan.n_windows * plan.window_s + overhead


def _sha256(path: Path) -> str:
    """sha256 of the artifact; of a kernel manifest, over its variant directory's files (names and bytes)."""
    if path.name != KERNELS_FILE:
        return files_sha256([path])
    return dir_sha256(path.parent)[0]


def soak_job(params: Params, variant: str, device: str, compiled: dict, artifact: Path) -> SoakJob:
    """The soak of ``artifact`` (compile report ``compiled``) on ``device``, from params."""
    from greenpipe.recipes import get_recipe

    dev = params.deploy.devices[device]
    recipe = get_recipe(compiled["recipe"])
    shape = recipe.bench_input(compiled["model_args"], params.deploy.input_size)
    multiple = int(compiled["multiple"])
    if multiple > 1 and any(n % multiple for n in shape[-2:]):
        raise GreenpipeError(f"deploy.input_size = {params.deploy.input_size}: must be a multiple of {multiple} "
                             "for this model")
    return SoakJob(
        variant=variant, device=device, kind=dev.kind, target=dev.target, runtime=dev.runtime, batch=dev.batch,
        threads=params.base.threads, recipe=recipe.name, shape=[dev.batch, *shape[1:]],
        meter=dev.meter, meter_options=dict(dev.meter_options), plan=plan_of(params).to_dict(),
        artifact=str(artifact), artifact_bytes=artifact_bytes(artifact), artifact_sha256=_sha256(artifact),
    )  # fmt: skip


def soak_identity(job: SoakJob, meter_name: str) -> dict:
    """What must not change between a soak and its resumption (hashed into the soak key)."""
    return {"variant": job.variant, "device": job.device, "artifact_sha256": job.artifact_sha256,
            "artifact_size": job.artifact_bytes, "shape": list(job.shape), "threads": job.threads,
            "runtime": job.runtime, "meter": meter_name, "meter_options": dict(job.meter_options),
            "plan": {k: v for k, v in job.plan.items() if not k.startswith("overhead")}}  # fmt: skip


def choose_meter(meter: str, meter_options: dict) -> tuple[str, dict, str | None]:
    """``(meter name, options, note)``: ``auto`` picks rapl when it is readable here, else estimate.

    ``pid: self`` in ``meter_options`` (the estimate meter) becomes this process's pid: on a machine
    shared with other work the whole-machine estimate would charge their CPU time to the soak.
    """
    if meter != "auto":
        options = dict(meter_options)
        if options.get("pid") == "self":
            options["pid"] = os.getpid()
        return meter, options, None
    ok, why = available("rapl")
    if ok:
        return "rapl", {}, "meter: auto chose rapl (readable here)"
    return "estimate", {}, f"meter: auto fell back to estimate because RAPL is not readable here: {why}"


def clock_note(meter_name: str, remote_host: str | None = None) -> str:
    """Whose clocks stamp the series: this process's, or (``remote_host``) the device host's."""
    if meter_name == "wallmeter":
        note = ("power from an external wall meter's log, aligned to the soak windows by wall clock "
                "(time.time() where the soak runs vs the meter's timestamps): the two clocks must agree (NTP); "
                "their offset is not measured")
    else:
        note = "meter read in the soak's process: power samples and inference timings on the same monotonic clock"
    if remote_host is not None:
        note += (f"; the soak ran on device host {remote_host}, so every wall-clock time in the series "
                 f"(t_wall_start, t_wall_end, t_wall, resume gaps) is {remote_host}'s clock, not the build "
                 "host's: compare with other machines' logs only as far as the clocks agree (NTP)")
    return note


def _meter_fields(meter: Meter, note: str | None, remote_host: str | None) -> dict:
    info = meter.describe()
    label = info.what if not info.measured else f"{provenance(info.name, True)}: {info.what}"
    return {
        "meter": {"name": info.name, "scope": info.scope, "what": info.what, "measured": info.measured,
                  "units": info.units, "resolution": info.resolution},
        "power_measured": info.measured,
        "power_source": label,
        "meter_note": note,
        "clock": clock_note(info.name, remote_host),
    }


# -- soak records in an S3 result store -------------------------------------------------------------

class StoreSeries:
    """Puts each soak record in an S3 result store as ``results/<run_id>/<sub>NNNNN-<kind>.json``, in order.

    ``strict``: a failed put raises (on a device host the store is the only durable copy); otherwise it
    is counted in :attr:`status` and the soak goes on (locally the checkpoint file is the record).
    ``signer`` ``(host, key)``: each record goes up as an envelope signed with the host's key, bound to
    the run id and the record's name (:func:`greenpipe.farm.results.sign_summary`), as a device host
    stores its windows; :meth:`read` with that host's key takes only such records.
    """

    def __init__(self, store: ArtifactStore, run_id: str, sub: str = "", strict: bool = False,
                 signer: tuple[str, str] | None = None):  # fmt: skip
        self.store, self.run_id, self.sub, self.strict, self.signer = store, run_id, sub, strict, signer
        self.count = 0
        self.status = {"bucket": store.bucket, "prefix": store.prefix, "run_id": run_id,
                       "results": f"results/{run_id}/{sub}", "put": 0, "errors": 0, "first_error": None,
                       "signed": signer is not None}  # fmt: skip

    def __call__(self, record: dict) -> None:
        name = f"{self.sub}{self.count:05d}-{record['kind']}.json"
        self.count += 1
        if self.signer is not None:
            from greenpipe.farm.results import sign_summary

            host, key = self.signer
            record = sign_summary(record, host, f"{self.run_id}/{name}", key)
        try:
            self.store.put_json(self.store.result_key(self.run_id, name), record)
            self.status["put"] += 1
        except GreenpipeError as err:
            if self.strict:
                raise
            self.status["errors"] += 1
            self.status["first_error"] = self.status["first_error"] or str(err)

    @staticmethod
    def read(store: ArtifactStore, run_id: str, sub: str = "", verify: tuple[str, dict[str, str]] | None = None
             ) -> list[dict]:  # fmt: skip
        """The checkpoint records stored under ``results/<run_id>/<sub>``, in order. With ``verify``
        ``(host, {host: key})`` every record must carry that host's signature for its run and name, else
        ResultRejected names the host, the record and the reason (nothing of the series is taken)."""
        from greenpipe.farm.results import SUMMARY_MAX_BYTES, verify_summary

        base = f"results/{run_id}/"
        keys = [k for k in store.list(f"{base}{sub}") if k.endswith(".json") and "/" not in k[len(f"{base}{sub}"):]]
        records = []
        for k in keys:
            record = store.get_json(k, max_bytes=SUMMARY_MAX_BYTES)
            if verify is not None:
                host, host_keys = verify
                name = k[len(base):]
                record = verify_summary(record, host, f"{run_id}/{name}", host_keys, what=f"soak record {name}")
            records.append(record)
        return [r for r in records if isinstance(r, dict) and r.get("kind") in RECORD_KINDS]


def stored_soak(store: ArtifactStore, runs: list[str], verify: tuple[str, dict[str, str]] | None = None
                ) -> tuple[str | None, list[dict]]:  # fmt: skip
    """``(run id, records)`` of the run among ``runs`` whose stored series has the most measured windows.

    Each run starts by storing again what it resumed from, so that run holds the whole series so far;
    the latest wins a tie. ``(None, [])`` when no run stored a header. ``verify`` as in
    :meth:`StoreSeries.read`: a record without the host's signature rejects the lot.
    """
    best: tuple[int, str | None, list[dict]] = (-1, None, [])
    for run_id in runs:
        records = StoreSeries.read(store, run_id, "soak/", verify)
        if not records or records[0].get("kind") != "header":
            continue
        done = sum(1 for r in records if r.get("kind") == "window" and r.get("phase") == "measure")
        if done >= best[0]:
            best = (done, run_id, records)
    return best[1], best[2]


def _publisher(params: Params, run_id: str) -> tuple[StoreSeries | None, dict]:
    """``(publish, status)`` for a local soak: each record to ``soak.store``, or None when that is off."""
    cfg = params.soak.store
    bucket = cfg.bucket or os.environ.get(BUCKET_ENV, "")
    if not bucket:
        return None, {"bucket": None, "prefix": cfg.prefix, "run_id": run_id, "results": None, "put": 0,
                      "errors": 0, "first_error": None}  # fmt: skip
    from greenpipe.store import ArtifactStore

    series = StoreSeries(ArtifactStore(bucket, prefix=cfg.prefix, endpoint_url=cfg.endpoint or None), run_id)
    return series, series.status


# -- the soak, wherever it runs ---------------------------------------------------------------------

def soak(job: SoakJob, artifact: Path, checkpoint: Checkpoint, publish: Publish | None = None, *,
         choice: tuple[str, dict, str | None] | None = None, remote: bool = False,
         earlier: list[dict] | None = None) -> dict:
    """Run or resume the soak of ``job`` on this machine with ``artifact``; return its metrics.

    ``choice`` is :func:`choose_meter`'s answer when the caller already has it. ``remote``: this is a
    device host running the job for a build host (the clock note says whose clock the series is on).
    ``earlier`` are the records a failed attempt stored: with the same soak key they seed
    ``checkpoint`` (and go to ``publish`` again) and the soak resumes after them; otherwise it starts
    over and says so. The series stays in ``checkpoint``; the caller moves it.
    """
    from greenpipe.runtime import host_facts

    plan = SoakPlan(**job.plan)
    meter_name, options, note = choice or choose_meter(job.meter, job.meter_options)
    identity = soak_identity(job, meter_name)
    key = soak_key(identity)
    facts = host_facts(job.threads, job.runtime)
    tag = f"soak {job.variant}@{job.device}" + (f" on {facts['name']}" if remote else "")

    def progress(msg: str) -> None:
        print(f"{tag}: {msg}", file=sys.stderr, flush=True)

    if earlier:
        if earlier[0].get("kind") == "header" and earlier[0].get("key") == key:
            checkpoint.path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.path.write_text("")
            for record in earlier:
                checkpoint.append(record)
                if publish is not None:  # this run's store prefix holds the whole series, not just its part
                    publish(record)
            progress(f"resuming from the {len(earlier)} records an earlier attempt stored")
        else:
            progress(f"the earlier attempt's records are of another soak (key {earlier[0].get('key')!r}, this "
                     f"one {key!r}): starting over")
    desc: dict = {}

    def load_workload():
        from greenpipe.deploy import load_artifact

        runner = load_artifact(job.recipe, job.runtime, artifact, job.threads, job.batch)
        desc.update(runner.describe())
        x = np.random.default_rng(0).random(tuple(job.shape), dtype=np.float32)  # fixed input: only timing matters
        batch = job.shape[0]

        def run_once() -> int:
            runner.run(x)
            return batch

        return run_once

    with open_meter(meter_name, **options) as meter:
        context = {"recipe": job.recipe, "variant": job.variant, "device_name": job.device, "target": job.target,
                   "input_shape": list(job.shape), "batch": job.batch, "artifact": job.artifact, "host": facts,
                   **_meter_fields(meter, note, facts["name"] if remote else None)}  # fmt: skip
        header = {"key": key, "identity": identity, "context": context}
        result = run_soak(load_workload, meter, plan, checkpoint, header, publish, progress)
    context = checkpoint.read()[0]["context"]  # the first run's, when resumed
    if remote:
        desc["host"] = facts["label"]  # the runner says "local CPU": local to the device host
    host = desc.get("host", "local CPU")
    return {**context, **result, "source": f"soak on {host}, {desc.get('label', job.runtime)}; "
                                           f"power: {context['power_source']}",
            "device": {**desc, "device": job.device, "kind": job.kind}}


def _finish(checkpoint: Checkpoint, metrics: dict, publish: Publish | None, out: Path) -> None:
    if publish is not None:
        publish({"kind": "metrics", **metrics})
    out.mkdir(parents=True, exist_ok=True)
    shutil.move(str(checkpoint.path), out / SERIES_FILE)  # complete: the series becomes the output
    write_json(out / "soak.json", metrics)


def soak_on_host(job: SoakJob, artifact: Path, store: ArtifactStore, run_id: str, earlier_runs: list[str],
                 checkpoint_dir: Path, out: Path, signer: tuple[str, str]) -> dict:
    """The device-host side of a remote soak (flows/device_run.py): soak, storing every window as it closes.

    Records go to ``results/<run_id>/soak/`` in ``store`` (a failed put fails the run: the store is what
    survives the host), each signed with ``signer`` ``(host, key)``; the best series ``earlier_runs``
    stored is resumed from (:func:`stored_soak`), taking only records with this host's signature.
    Writes ``out/timeseries.jsonl`` and ``out/soak.json``; returns the metrics.
    """
    series = StoreSeries(store, run_id, "soak/", strict=True, signer=signer)
    host, key = signer
    _, earlier = stored_soak(store, earlier_runs, (host, {host: key})) if earlier_runs else (None, [])
    checkpoint = Checkpoint(Path(checkpoint_dir) / SERIES_FILE)
    metrics = soak(job, artifact, checkpoint, series, remote=True, earlier=earlier)
    metrics["store"] = series.status
    _finish(checkpoint, metrics, series, Path(out))
    return metrics


# -- the stage --------------------------------------------------------------------------------------

def soak_stage(params: Params, variant: str, device: str, compiled_dir: Path, checkpoint_dir: Path, out: Path,
               report_partial: bool = False) -> dict:
    """Run, resume or (``report_partial``) just report the soak of ``variant`` on ``device``; return the metrics."""
    devices = params.deploy.devices
    if device not in devices:
        raise GreenpipeError(f"--device {device}: not in deploy.devices (params.yaml has: {', '.join(devices)})")
    dev = devices[device]
    checkpoint_dir, out = Path(checkpoint_dir), Path(out)
    if report_partial:
        return _report_partial(params, device, dev, checkpoint_dir, out)

    compiled, artifact = compiled_artifact(compiled_dir, variant, dev.target)
    job = soak_job(params, variant, device, compiled, artifact)
    if dev.host != "local":
        return _soak_remote(job, dev, artifact, checkpoint_dir, out)

    choice = choose_meter(job.meter, job.meter_options)
    checkpoint = Checkpoint(checkpoint_dir / SERIES_FILE)
    key = soak_key(soak_identity(job, choice[0]))
    publish, store_status = _publisher(params, f"soak-{variant}-{device}-{key}")
    metrics = soak(job, artifact, checkpoint, publish, choice=choice)
    metrics["store"] = store_status
    _finish(checkpoint, metrics, publish, out)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return metrics


def _soak_remote(job: SoakJob, dev: DeviceParams, artifact: Path, checkpoint_dir: Path, out: Path) -> dict:
    """Soak on ``dev``'s host through the farm; resume from this soak's earlier runs; fill ``out``."""
    from greenpipe.farm.client import FarmError, fetch_results, put_artifact, run_on_host

    pointer = checkpoint_dir / POINTER_FILE
    before = read_json(pointer) if pointer.is_file() else {}
    earlier = list(before.get("runs", [])) if before.get("job") == job.to_dict() else []

    def upload(store: ArtifactStore) -> dict:
        store.ensure_bucket()
        return {"artifact": put_artifact(store, artifact).to_dict(), "data": None}

    def remember(farm: Any, runs: list[str]) -> None:
        write_json(pointer, {"job": job.to_dict(), "runs": runs, "store": farm.store_spec()})

    try:
        metrics = run_on_host("soak", job, dev, upload, lambda farm, run_id: fetch_results(farm, run_id, job, dev, out),
                              earlier, remember, planned_s=planned_seconds(SoakPlan(**job.plan)))  # fmt: skip
    except FarmError as err:
        raise FarmError(f"{err} {_kept(job, dev, checkpoint_dir)}") from None
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return metrics


def _kept(job: SoakJob, dev: DeviceParams, checkpoint_dir: Path) -> str:
    """What a failed remote soak left in the store, and how to report or resume it (for the error)."""
    pointer = checkpoint_dir / POINTER_FILE
    written = read_json(pointer) if pointer.is_file() else {}
    if written.get("job") != job.to_dict() or not written.get("runs"):
        return "No run of this soak started, so nothing was stored."
    from greenpipe.farm.client import Farm

    runs = written["runs"]
    try:
        farm = Farm.resolve()
        store = farm.store.host_area(dev.host)
        run_id, records = stored_soak(store, runs, (dev.host, farm.host_keys))
    except GreenpipeError as err:
        return f"The windows its runs stored could not be read back ({err}); flow runs: {', '.join(runs)}."
    if run_id is None:
        return f"No window was stored (flow runs {', '.join(runs)}); running the stage again starts over."
    done = sum(1 for r in records if r.get("kind") == "window" and r.get("phase") == "measure")
    planned = SoakPlan(**job.plan).n_windows
    return (f"The finished windows are kept: {done} of {planned} measured windows are in {store} under "
            f"results/{run_id}/soak/. The stage's command with --report-partial reports them, marked partial; "
            "running the stage again resumes from them.")


def _report_partial(params: Params, device: str, dev: DeviceParams, checkpoint_dir: Path, out: Path) -> dict:
    """Figures of a soak that did not finish, marked partial: from the checkpoint, or the store (remote)."""
    plan = plan_of(params)
    if dev.host == "local":
        checkpoint = Checkpoint(checkpoint_dir / SERIES_FILE)
        records = checkpoint.read()
        where = f"the checkpoint {checkpoint.path}"
        if not records:
            raise GreenpipeError(
                f"--report-partial: {checkpoint.path} holds no soak in progress; nothing to report (run the "
                f"soak first; a completed soak's series and metrics are in {out})"
            )
    else:
        from greenpipe.farm.client import Farm

        pointer = checkpoint_dir / POINTER_FILE
        if not pointer.is_file():
            raise GreenpipeError(
                f"--report-partial: {pointer} does not exist: no remote soak of deploy.devices.{device} is in "
                f"progress or failed here; nothing to report (a completed soak's series and metrics are in {out})"
            )
        runs = read_json(pointer)["runs"]
        farm = Farm.resolve()
        store = farm.store.host_area(dev.host)
        run_id, records = stored_soak(store, runs, (dev.host, farm.host_keys))  # signed by that host only
        if run_id is None:
            raise GreenpipeError(
                f"--report-partial: the flow runs of this soak on {dev.host} ({', '.join(runs)}) stored no "
                f"window in {store}; nothing to report. Run the stage again to soak from the start."
            )
        where = f"{store} results/{run_id}/soak/ (flow run {run_id} on {dev.host}; the series is its clock's)"
    metrics = {**records[0]["context"], **summarize(records, plan)}
    metrics["partial"] = True  # reported before the soak finished, whatever the windows say
    metrics["partial_note"] = (f"PARTIAL: the soak did not finish; {metrics['windows_done']} of "
                               f"{metrics['windows_planned']} measured windows, read from {where}")
    write_json(out / "partial.json", metrics)
    return metrics
