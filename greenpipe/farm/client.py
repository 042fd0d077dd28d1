"""Build-host side of a remote job: upload, ``run_deployment`` on the device's queue, wait, fetch results.

    from greenpipe.farm.client import run_remote
    metrics = run_remote(job, device_params, artifact_path, prepared_dir, out_dir)  # as the deploy stage does
    result = run_on_host("soak", job, device_params, upload, take)                  # as the soak stage does

:func:`run_on_host` is the machinery both stages share (the checks, the upload, the submission, the
watch and the retries); :func:`run_remote` is deploy's use of it. A job names its ``stage``: the host's
``device_run`` flow runs :func:`greenpipe.deploy.measure` for ``deploy`` and
:func:`greenpipe.soak.soak_on_host` for ``soak``.

Where the farm is comes from the environment, not params.yaml (changing servers must not rerun stages):

* Prefect: ``PREFECT_API_URL`` and ``PREFECT_API_AUTH_STRING`` (environment or Prefect profile); else
  the loopback stack started by ``greenpipe farm up`` in ``GREENPIPE_FARM_DIR`` (default
  ``.greenpipe/farm``) and its auth string.
* S3: ``GREENPIPE_FARM_BUCKET`` (+ ``GREENPIPE_FARM_PREFIX``, ``AWS_ENDPOINT_URL_S3``, credentials from
  boto3's chain); else the loopback stack's server, keys and bucket.
* Hosts' result-signing keys: ``GREENPIPE_FARM_HOST_KEYS`` (a 0600 JSON file); else the loopback stack's.

One deployment of flows/device_run.py per work pool (``device-run/<pool>``) is created or updated on
first use; a job is a flow run of it on the device's queue. Its pull step changes into
``$GREENPIPE_AGENT_DIR``, the greenpipe checkout the host's worker runs from, so the same deployment
serves every host of a pool wherever it keeps its checkout.

Waiting is bounded and watched: a run nobody picks up fails after the device's ``timeout_s`` naming
device, pool and queue; a run whose host stops polling its queue for ``lost_after_s`` (the worker or
the machine died) is marked Crashed and submitted again, up to ``retries`` times, as is a run that
ends Crashed or Failed. A run that outlives its time, or whose stage is interrupted, is cancelled
through Prefect's Cancelling state (:func:`stop_run`): the host's worker kills the job's process group,
so nothing runs or uploads after. Only a COMPLETED run's ``summary.json`` (written last by the host) is taken,
read from the host's own area of the store (``hosts/<host>/``, the only place its key may write),
and only when it carries the host's signature and passes its checks (:mod:`greenpipe.farm.results`):
then its outputs are streamed, size-capped and checksum-verified, into a temporary directory that
replaces ``out`` only when complete. A rejected result raises FarmError naming host and reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from greenpipe.errors import GreenpipeError
from greenpipe.farm.auth import api_auth_from_env, api_settings, host_keys_from_env
from greenpipe.farm.deployment import ensure_deployment
from greenpipe.farm.results import (
    OUTPUTS_MAX_BYTES, SUMMARY_MAX_BYTES, ResultRejected, check_summary, verify_summary,
)  # fmt: skip
from greenpipe.quant.kernels import KERNELS_FILE
from greenpipe.store import ArtifactRef, ArtifactStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from greenpipe.params import DeviceParams

FARM_DIR_ENV = "GREENPIPE_FARM_DIR"
DEFAULT_FARM_DIR = ".greenpipe/farm"
DEFAULT_BUCKET = "greenpipe"
POLL_S = 0.25  # how often the stage reads the run's state, seconds (loopback API calls are ~ms)
# Tries of one API call after the first when the server stops answering (Prefect's default is 5, with
# backoff: about 75 s before a lost server is reported).
CLIENT_RETRIES = 2

T = TypeVar("T")


class Job(Protocol):
    """What a remote job carries (``greenpipe.deploy.DeployJob``, ``greenpipe.soak.SoakJob``): plain JSON."""

    variant: str
    device: str

    def to_dict(self) -> dict[str, Any]: ...


class FarmError(GreenpipeError):
    """A remote device job could not be submitted, ran nowhere, or did not come back whole."""


def farm_dir() -> Path:
    """State directory of the loopback stack (``GREENPIPE_FARM_DIR``, default ``.greenpipe/farm``)."""
    return Path(os.environ.get(FARM_DIR_ENV) or DEFAULT_FARM_DIR)


@dataclass(frozen=True)
class Farm:
    """Where the farm's Prefect API and S3 store are, and how they were found (for error messages)."""

    api_url: str
    store: ArtifactStore
    where: str  # "the loopback stack in .greenpipe/farm" or "PREFECT_API_URL / GREENPIPE_FARM_BUCKET"
    api_auth: str | None = field(default=None, repr=False)
    host_keys: dict[str, str] = field(default_factory=dict, repr=False)  # host -> its signing key (hex)

    def store_spec(self) -> dict[str, Any]:
        """What a device host needs to reach the same store (no credentials: hosts have their own)."""
        endpoint = None if self.store.endpoint_url.endswith("amazonaws.com") else self.store.endpoint_url
        return {
            "bucket": self.store.bucket,
            "prefix": self.store.prefix,
            "endpoint_url": endpoint,
            "region": self.store.client.meta.region_name,
        }

    @classmethod
    def resolve(cls) -> Farm:
        """The farm from the environment, else the loopback stack; FarmError when neither is there."""
        from greenpipe.farm.stack import LocalStack

        api_url = os.environ.get("PREFECT_API_URL") or _profile_api_url()
        bucket = os.environ.get("GREENPIPE_FARM_BUCKET")
        stack = LocalStack(farm_dir())
        if api_url and bucket:
            store = ArtifactStore(
                bucket,
                os.environ.get("GREENPIPE_FARM_PREFIX", "greenpipe"),
                endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None,
            )
            return cls(api_url, store, "PREFECT_API_URL and GREENPIPE_FARM_BUCKET", api_auth_from_env(),
                       host_keys_from_env() or {})  # fmt: skip
        running = stack.running()
        if running is None:
            raise FarmError(
                "No device farm to send the job to: set PREFECT_API_URL (the farm's Prefect server) and "
                "GREENPIPE_FARM_BUCKET (its S3 bucket; endpoint and credentials from AWS_* / a profile), "
                f"or start the loopback stack with `greenpipe farm up` (state dir {stack.state_dir})."
            )
        return cls(
            api_url or running.api_url,
            stack.store(),
            f"the loopback stack in {stack.state_dir}",
            api_auth_from_env() if api_url else running.secrets.api_auth,
            {**running.secrets.host_keys, **(host_keys_from_env() or {})},
        )


def _profile_api_url() -> str | None:
    # A URL in the active Prefect profile counts as much as the environment variable.
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _where(job: Job, dev: DeviceParams) -> str:
    return f"device {job.device!r} (host {dev.host}, work pool {dev.pool!r}, queue {dev.queue!r})"


def _check_queue(client: Any, job: Job, dev: DeviceParams, farm: Farm) -> Any:
    """The device's work queue; FarmError naming device, pool and queue when pool or queue is missing."""
    from prefect.exceptions import ObjectNotFound

    fix = (
        f"Start the worker of host {dev.host} (`prefect worker start --pool {dev.pool} --work-queue "
        f"{dev.queue}`, or infra/agent/ on a device host; `greenpipe farm up` for the simulated cpu hosts), "
        f"or correct deploy.devices.{job.device}.pool / .queue."
    )
    try:
        client.read_work_pool(dev.pool)
    except ObjectNotFound:
        raise FarmError(
            f"{_where(job, dev)}: work pool {dev.pool!r} does not exist on the Prefect server at "
            f"{farm.api_url} ({farm.where}): no worker has ever served it. {fix}"
        ) from None
    try:
        return client.read_work_queue_by_name(dev.queue, work_pool_name=dev.pool)
    except ObjectNotFound:
        raise FarmError(
            f"{_where(job, dev)}: work pool {dev.pool!r} has no queue {dev.queue!r} on {farm.api_url}. {fix}"
        ) from None


def _age_s(ts: datetime | None) -> float | None:
    if ts is None:
        return None
    return (datetime.now(timezone.utc) - ts).total_seconds()


def _say(msg: str, stage: str = "deploy") -> None:
    print(f"{stage}: {msg}", file=sys.stderr, flush=True)


def put_artifact(store: ArtifactStore, artifact: Path) -> ArtifactRef:
    """Put a deployable artifact in the store: the file, or a kernel manifest with its variant's directory."""
    if artifact.name == KERNELS_FILE:
        return store.put_dir(artifact.parent)
    return store.put_file(artifact)


def upload_inputs(store: ArtifactStore, job: Job, artifact: Path, data_dir: Path) -> tuple[ArtifactRef, ArtifactRef]:
    """Put the artifact and what the recipe's eval reads of ``data_dir`` in the store; return their refs."""
    from greenpipe.recipes import get_recipe

    files = get_recipe(job.recipe).eval_files(data_dir)
    store.ensure_bucket()
    art = put_artifact(store, artifact)
    # Only what the eval reads travels (the val split), not the training data.
    root = _common_root(files)
    with tempfile.TemporaryDirectory(prefix="greenpipe-val-") as tmp:
        for f in files:
            dest = Path(tmp) / f.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        data = store.put_dir(tmp)
    return art, data


def _common_root(files: list[Path]) -> Path:
    """The deepest folder holding every one of ``files`` (the eval's data root as the host will see it)."""
    if not files:
        raise FarmError("the recipe's eval reads no files: nothing to send to the device host")
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def run_remote(job: Job, dev: DeviceParams, artifact: Path, data_dir: Path, out: Path) -> dict:
    """Run deploy ``job`` on ``dev``'s host through Prefect; fill ``out`` as a local run would; return metrics."""

    def upload(store: ArtifactStore) -> dict[str, Any]:
        t0 = time.monotonic()
        art, data = upload_inputs(store, job, artifact, data_dir)
        _say(f"uploaded {artifact.name} and the val split to {store} in {time.monotonic() - t0:.1f} s")
        return {"artifact": art.to_dict(), "data": data.to_dict()}

    def take(farm: Farm, run_id: str) -> dict:
        metrics = fetch_results(farm, run_id, job, dev, out)
        _say(f"results of flow run {run_id} are in {out}")
        return metrics

    return run_on_host("deploy", job, dev, upload, take)


def run_on_host(
    stage: str,
    job: Job,
    dev: DeviceParams,
    upload: Callable[[ArtifactStore], dict[str, Any]],
    take: Callable[[Farm, str], T],
    earlier_runs: list[str] | tuple[str, ...] = (),
    on_submit: Callable[[Farm, list[str]], None] | None = None,
    planned_s: float = 0.0,
) -> T:
    """Run ``stage``'s ``job`` on ``dev``'s host: check, upload, submit, watch, retry; return ``take``'s result.

    ``upload(store)`` puts the inputs in the farm's S3 store and returns the flow parameters naming
    them (``artifact``, ``data``); ``take(farm, run_id)`` reads a COMPLETED run's results. Jobs other
    than deploy also get ``stage`` and ``earlier_runs`` (the given ``earlier_runs``, then this call's
    failed attempts, oldest first: a soak resumes from their stored windows); deploy's parameters carry
    neither, as before. ``on_submit(farm, runs)`` hears every run id as soon as the run exists (the soak
    stage writes them down, so a partial result can be found later). ``planned_s`` is how long the job
    itself is meant to run (a soak's plan): an attempt may take ``timeout_s`` on top of it. Raises
    FarmError naming device, pool, queue and the fix when the farm is unreachable, the queue missing, or
    no attempt completes.
    """
    import httpx
    from prefect.client.orchestration import get_client

    farm = Farm.resolve()
    try:
        with api_settings(farm.api_url, farm.api_auth, CLIENT_RETRIES), get_client(sync_client=True) as client:
            return _run_on_host(client, farm, stage, job, dev, upload, take, earlier_runs, on_submit, planned_s)
    except httpx.TransportError as e:  # connection refused / reset / timed out, after CLIENT_RETRIES
        raise FarmError(
            f"{_where(job, dev)}: lost the Prefect server at {farm.api_url} ({farm.where}) during the {stage} "
            f"job: {type(e).__name__}: {e or 'no answer'} (after {CLIENT_RETRIES} retries). Nothing of the job "
            "was taken. Restart the server (`greenpipe farm up` for the loopback farm), then run the stage "
            "again; a job still running on the host finishes unread."
        ) from None


def _run_on_host(
    client: Any, farm: Farm, stage: str, job: Job, dev: DeviceParams,
    upload: Callable[[ArtifactStore], dict[str, Any]], take: Callable[[Farm, str], T],
    earlier_runs: list[str] | tuple[str, ...], on_submit: Callable[[Farm, list[str]], None] | None,
    planned_s: float,
) -> T:  # fmt: skip
    """run_on_host's body, with a client on the farm's API."""
    t0 = time.monotonic()
    attempts = 1 + dev.retries
    history: list[str] = []
    runs = list(earlier_runs)
    unhealthy = client.api_healthcheck()  # None when the server answers
    if unhealthy is not None:
        raise FarmError(
            f"{_where(job, dev)}: cannot reach the Prefect server at {farm.api_url} ({farm.where}): "
            f"{unhealthy!r}. Start it (`greenpipe farm up` for the loopback farm) or fix PREFECT_API_URL."
        )
    _check_queue(client, job, dev, farm)  # before any upload: a wrong pool/queue fails at once
    inputs = upload(farm.store)
    name = ensure_deployment(client, dev.pool)
    for attempt in range(1, attempts + 1):
        parameters = {"job": job.to_dict(), **inputs, "store": farm.store_spec()}
        if stage != "deploy":  # deploy's parameters stay what a host running an older flow accepts
            parameters.update(stage=stage, earlier_runs=list(runs))
        flow_run = _submit(name, parameters, stage, job, dev, attempt)
        runs.append(str(flow_run.id))
        if on_submit is not None:
            on_submit(farm, list(runs))
        _say(f"{job.variant} on {_where(job, dev)}: flow run {flow_run.name} ({flow_run.id}), "
             f"attempt {attempt}/{attempts}", stage)  # fmt: skip
        try:
            outcome = _wait(client, flow_run.id, job, dev, farm, history, stage, planned_s)
        except KeyboardInterrupt:
            # Do not leave a job running on the host for a stage nobody waits on any more.
            stop_run(client, flow_run.id, "greenpipe: stage interrupted")
            raise
        if outcome == "COMPLETED":
            result = take(farm, str(flow_run.id))
            _say(f"{flow_run.name} done, {time.monotonic() - t0:.1f} s in all", stage)
            return result
        history.append(f"attempt {attempt}: {outcome}")
        _say(f"attempt {attempt}/{attempts} did not complete: {outcome}", stage)
    raise FarmError(
        f"{_where(job, dev)}: the {stage} job did not complete in {attempts} attempt(s) "
        f"(deploy.devices.{job.device}.retries = {dev.retries}): {'; '.join(history)}. "
        "See the flow runs' logs on the Prefect server (`prefect flow-run logs <id>`) and the worker's log "
        "on the host, fix the cause, and run the stage again."
    )


def _submit(name: str, parameters: dict, stage: str, job: Job, dev: DeviceParams, attempt: int) -> Any:
    from prefect.deployments import run_deployment

    run_name = f"{job.variant}-{job.device}-try{attempt}"
    return run_deployment(
        name,
        parameters=parameters,
        work_queue_name=dev.queue,
        timeout=0,  # return at once; _wait watches the run and the queue itself
        as_subflow=False,
        flow_run_name=run_name if stage == "deploy" else f"{stage}-{run_name}",
        tags=["greenpipe", f"stage:{stage}", f"device:{job.device}", f"variant:{job.variant}"],
    )


def _wait(
    client: Any,
    run_id: Any,
    job: Job,
    dev: DeviceParams,
    farm: Farm,
    history: list[str],
    stage: str = "deploy",
    planned_s: float = 0.0,
) -> str:
    """Watch a flow run until it completes ("COMPLETED"), ends otherwise or loses its host (a reason).

    Raises FarmError when nobody picks it up within ``dev.timeout_s``, or it does not finish within
    ``dev.timeout_s`` plus ``planned_s`` (the job's own planned length, seconds).
    """
    from prefect.states import Cancelled, Crashed

    start = time.monotonic()
    deadline = start + dev.timeout_s
    picked_up: float | None = None
    last_state = None
    while True:
        run = client.read_flow_run(run_id)
        state = run.state
        if state is not None and state.type.value != last_state:
            last_state = state.type.value
            _say(f"  {run.name}: {last_state} after {time.monotonic() - start:.1f} s", stage)
        if state is not None and state.is_completed():
            return "COMPLETED"
        if state is not None and state.is_final():
            return f"{state.type.value} ({state.message or 'no message'})"
        taken = state is not None and (state.is_pending() or state.is_running())
        if taken and picked_up is None:
            picked_up = time.monotonic()
        queue = client.read_work_queue_by_name(dev.queue, work_pool_name=dev.pool)
        age = _age_s(queue.last_polled)
        now = time.monotonic()
        if taken and now - picked_up > dev.lost_after_s and (age is None or age > dev.lost_after_s):
            # The host took the run, then stopped polling its queue: its worker (or the machine) died.
            why = (
                f"host lost: queue {dev.queue!r} not polled for {age:.0f} s (> lost_after_s "
                f"{dev.lost_after_s:g} s) while the run was {state.type.value}"
            )
            client.set_flow_run_state(run_id, Crashed(message=f"greenpipe: {why}"), force=True)
            return why
        if now > deadline + (planned_s if taken else 0.0):  # a taken job may run its planned length too
            if taken:
                stop_run(client, run_id, "greenpipe: timed out")
                plus = f" plus its planned {planned_s:g} s" if planned_s else ""
                what = f"was taken by the host but did not finish within timeout_s = {dev.timeout_s:g} s{plus}"
                fix = f"raise deploy.devices.{job.device}.timeout_s, or look at the host's worker log"
            else:
                client.set_flow_run_state(run_id, Cancelled(message="greenpipe: no worker"), force=True)
                polled = "never" if age is None else f"{age:.0f} s ago"
                what = (
                    f"was not picked up within timeout_s = {dev.timeout_s:g} s: no worker serves the queue "
                    f"(last polled {polled})"
                )
                fix = (
                    f"start the worker on {dev.host} (`prefect worker start --pool {dev.pool} --work-queue "
                    f"{dev.queue}`, infra/agent/, or `greenpipe farm up` for the simulated cpu hosts) and "
                    "check it reaches the Prefect server"
                )
            before = f" Earlier: {'; '.join(history)}." if history else ""
            raise FarmError(
                f"{_where(job, dev)}: flow run {run.name} ({run_id}) {what}. Prefect server: "
                f"{farm.api_url} ({farm.where}).{before} Fix: {fix}."
            )
        time.sleep(POLL_S)


def stop_run(client: Any, run_id: Any, why: str) -> None:
    """Cancel a flow run so that its host stops the job: a scheduled run is Cancelled at once; one a host
    has taken goes to Cancelling, which the host's worker sees and answers by killing the job's process group
    (SIGTERM, then SIGKILL) before it marks the run Cancelled. The job's summary is written last, so a
    killed job uploads no result; the stage would not take one from a cancelled run anyway."""
    from prefect.states import Cancelled, Cancelling

    state = client.read_flow_run(run_id).state
    taken = state is not None and (state.is_running() or state.is_pending())
    client.set_flow_run_state(run_id, Cancelling(message=why) if taken else Cancelled(message=why), force=True)


def _cannot_write(job: Job, dev: DeviceParams, run_id: str, out: Path, why: str) -> FarmError:
    return FarmError(
        f"{_where(job, dev)}: the outputs of flow run {run_id} from host {dev.host!r} passed their checks but "
        f"could not be written beside {out}: {why} Nothing of them was kept and {out} is as it was. Make room "
        f"(free space in {out.parent}) and run the stage again."
    )


def fetch_results(farm: Farm, run_id: str, job: Job, dev: DeviceParams, out: Path) -> dict:
    """Check a completed run's signed result set from ``dev.host``, download its outputs into ``out``
    (replaced whole) and return its metrics; FarmError naming host and reason when anything is off.

    Order: the summary (at most SUMMARY_MAX_BYTES read), its signature with the host's key, its shape and
    plausible ranges, then the outputs manifest (its sha256 and size are signed) and its total against
    OUTPUTS_MAX_BYTES, all before any output file is downloaded; each file then streams with a cap at its
    signed size and is checked against its sha256. ``out`` is untouched unless everything passes.
    """
    from greenpipe.store import LocalWriteError, StoreError

    store = farm.store.host_area(dev.host)  # the only place the host's key may write
    key = store.result_key(run_id, "summary.json")
    try:
        envelope = store.get_json(key, max_bytes=SUMMARY_MAX_BYTES)
        summary = verify_summary(envelope, dev.host, run_id, farm.host_keys)
        check_summary(summary, dev.host, run_id, job.to_dict())
    except (ResultRejected, StoreError) as e:
        why = e if isinstance(e, ResultRejected) else f"result of flow run {run_id} from host {dev.host!r}: {e}"
        raise FarmError(f"{_where(job, dev)}: {key} in {store}: {why} Nothing of it was taken.") from None
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(prefix=f".{out.name}.incoming-", dir=out.parent))
    except OSError as e:
        raise _cannot_write(job, dev, run_id, out, f"{e.strerror or e} (errno {e.errno})") from None
    try:
        try:
            store.get_dir(summary["outputs"], incoming, max_total_bytes=OUTPUTS_MAX_BYTES)
        except LocalWriteError as e:
            raise _cannot_write(job, dev, run_id, out, str(e)) from e
        except StoreError as e:
            raise FarmError(
                f"{_where(job, dev)}: the outputs of flow run {run_id} from host {dev.host!r} were rejected: {e}"
            ) from e
        os.chmod(incoming, 0o755)  # mkdtemp made it private; outputs are ordinary readable files
        if out.exists():
            shutil.rmtree(out)
        os.replace(incoming, out)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return summary["metrics"]
