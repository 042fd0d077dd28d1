"""deploy@V-D on remote devices through the real loopback stack: a Prefect server, rclone S3, two workers.

Run: python -m pytest -q -p no:cacheprovider tests/farm
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.io import read_json
from tasks.deploy import deploy_stage
from tests.farm.conftest import POOL, PREFIX, compiled_dir, remote_params


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _same_quality(remote: dict, local: dict) -> None:
    for key in ("psnr", "ssim", "noisy_psnr"):
        assert remote[key] == pytest.approx(local[key], rel=1e-12, abs=1e-12), key
    assert remote["samples"] == local["samples"]


@pytest.mark.parametrize("variant, host", [("fp32", "cpu-host-1"), ("ptq8", "cpu-host-2")])
def test_remote_run_equals_the_in_process_eval(farm, compiled, tmp_path, variant, host):
    ws = compiled
    params = remote_params(**{host: {}})
    local = deploy_stage(params, variant, "local", compiled_dir(ws, variant), ws.data, tmp_path / "local")
    out = tmp_path / "remote"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")  # replaced whole, like DVC would
    remote = deploy_stage(params, variant, host, compiled_dir(ws, variant), ws.data, out)

    _same_quality(remote, local)
    rows_remote = read_json(out / "eval.json")["per_sample"]
    rows_local = read_json(tmp_path / "local" / "eval.json")["per_sample"]
    assert [r["name"] for r in rows_remote] == [r["name"] for r in rows_local]
    for a, b in zip(rows_remote, rows_local, strict=True):
        assert a["psnr"] == pytest.approx(b["psnr"], rel=1e-12)
    # Same outputs as a local run, nothing else; the samples are the same pixels.
    assert _files(out) == _files(tmp_path / "local")
    for png in (out / "samples").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "local" / "samples" / png.name).read_bytes()
    # Measured on the simulated host, and saying so.
    assert remote["source"].startswith(f"measured on {host} (") and "ONNX Runtime" in remote["source"]
    assert remote["device"]["host_facts"]["name"] == host
    assert remote["device_name"] == host and remote["variant"] == variant
    assert remote["fps"] > 0 and 0 < remote["p50_ms"] <= remote["p99_ms"]
    assert remote["loadgen_valid"] is False and all(  # 0.3 s runs: LoadGen-valid, not to the rules
        v.startswith("non-compliant (duration ") for v in remote["loadgen_validity"].values())
    assert set(remote) == set(local)
    bench = read_json(out / "bench.json")
    assert (
        bench["source"] == remote["source"] and bench["single_stream"]["settings"]["min_duration_ms"] == 300
    )
    # The job process on the host never imported torch, TensorFlow or DVC.
    store = farm_store(farm, host)
    summaries = [store.get_json(k)["body"] for k in store.list("results/") if k.endswith("summary.json")]
    mine = [s for s in summaries if s["host"]["name"] == host and s["job"]["variant"] == variant]
    assert mine and all(s["heavy_modules"] == [] for s in mine)
    assert all(0 < s["job_peak_rss_mb"] < 1024 for s in mine)


def test_a_queue_without_a_worker_fails_within_its_timeout(farm, compiled, tmp_path):
    from greenpipe.farm.stack import ensure_pool

    ensure_pool(farm.api_url, POOL, ["cpu-host-9"], farm.secrets.api_auth)  # the queue exists, nobody polls it
    params = remote_params(**{"cpu-host-9": {"timeout_s": 3, "retries": 0}})
    t0 = time.monotonic()
    with pytest.raises(GreenpipeError) as err:
        deploy_stage(params, "ptq8", "cpu-host-9", compiled_dir(compiled, "ptq8"), compiled.data, tmp_path)
    took = time.monotonic() - t0
    msg = str(err.value)
    assert "'cpu-host-9'" in msg and f"work pool {POOL!r}" in msg and "queue 'cpu-host-9'" in msg
    assert "no worker serves the queue" in msg and "prefect worker start" in msg
    assert took < 3 + 10  # the timeout plus the upload, not a hang
    assert not (tmp_path / "eval.json").exists()


def test_a_missing_pool_or_queue_fails_at_once_naming_them(farm, compiled, tmp_path):
    params = remote_params(
        **{"gpu-box": {"pool": "gpu-hosts", "queue": "gpu-box-1"}, "cpu-host-7": {"queue": "cpu-host-7"}}
    )
    for device, pool, queue in (("gpu-box", "gpu-hosts", "gpu-box-1"), ("cpu-host-7", POOL, "cpu-host-7")):
        t0 = time.monotonic()
        with pytest.raises(GreenpipeError) as err:
            deploy_stage(params, "ptq8", device, compiled_dir(compiled, "ptq8"), compiled.data, tmp_path)
        msg = str(err.value)
        assert f"device {device!r}" in msg and repr(pool) in msg and repr(queue) in msg, msg
        assert time.monotonic() - t0 < 15


@pytest.mark.slow
def test_a_host_killed_mid_job_is_rerun_when_its_worker_returns(farm, compiled, tmp_path):
    """SIGKILL cpu-host-2's worker and its running job (the host is lost: nothing of it can report): the
    stage sees the queue go quiet, marks the run Crashed, submits it again, and ends with the same results
    as in-process, from the second, complete run only."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    host = "cpu-host-2"
    params = remote_params(**{host: {"lost_after_s": 6, "retries": 1, "timeout_s": 120}})
    # Long enough LoadGen runs that the kill lands mid-job.
    params = params.model_copy(
        update={"deploy": params.deploy.model_copy(update={"single_stream_s": 2.0, "offline_s": 2.0})}
    )
    ws = compiled
    result: dict = {}

    def run() -> None:
        try:
            result["metrics"] = deploy_stage(params, "ptq8", host, compiled_dir(ws, "ptq8"), ws.data,
                                             tmp_path / "remote")  # fmt: skip
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    stage = threading.Thread(target=run)
    stage.start()
    tag = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"device:{host}", "variant:ptq8"]))

    def runs() -> list:
        with (
            farm.api(),
            get_client(sync_client=True) as client,
        ):
            return sorted(client.read_flow_runs(flow_run_filter=tag), key=lambda r: r.created)

    deadline = time.monotonic() + 90
    while not (running := [r for r in runs() if r.state and r.state.is_running()]):
        assert time.monotonic() < deadline and stage.is_alive(), result
        time.sleep(0.2)
    time.sleep(1.0)  # inside the job (pull, load, eval, LoadGen)
    # The process worker starts each job in a session of its own: kill both, as a power cut would.
    job_pid = int(str(running[0].infrastructure_pid).rsplit(":", 1)[-1])
    farm.workers[host].kill()
    with contextlib.suppress(ProcessLookupError):  # on a loaded machine it may already have gone with its worker
        os.kill(job_pid, signal.SIGKILL)

    while not any(r.state and r.state.is_crashed() for r in runs()):
        assert time.monotonic() < deadline + 60 and stage.is_alive(), result
        time.sleep(0.3)
    farm.start(host)  # the host comes back
    stage.join(timeout=180)
    assert not stage.is_alive()
    assert "error" not in result, result.get("error")

    first, second = runs()[-2:]
    assert first.state.is_crashed() and "host lost" in first.state.message
    assert second.state.is_completed()
    local = deploy_stage(params, "ptq8", "local", compiled_dir(ws, "ptq8"), ws.data, tmp_path / "local")
    _same_quality(result["metrics"], local)
    assert _files(tmp_path / "remote") == _files(tmp_path / "local")
    # The outputs are the completed run's, checksum-verified; nothing of the killed run was taken.
    store_summary = farm_store(farm, host).get_json(f"results/{second.id}/summary.json")["body"]
    assert store_summary["metrics"]["psnr"] == result["metrics"]["psnr"]
    assert f"results/{first.id}/summary.json" not in farm_store(farm, host).list("results/")


def farm_store(farm, host):
    """The controller's view of what ``host`` wrote (its own area of the tests' store)."""
    from greenpipe.store import ArtifactStore

    return ArtifactStore.from_endpoint(farm.endpoint, farm.bucket, PREFIX).host_area(host)


@pytest.mark.slow
def test_a_timed_out_run_is_stopped_on_the_host_and_uploads_nothing(farm, compiled, tmp_path):
    """A job that outlives timeout_s is cancelled: the host's worker kills the job's process group, the run
    ends Cancelled, and no summary.json (nothing the stage could take) is uploaded after."""
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from greenpipe.farm.client import FarmError

    host = "cpu-host-1"
    params = remote_params(**{host: {"timeout_s": 40, "retries": 0}})
    params = _loadgen_s(params, 300.0)  # far longer than timeout_s: the job is mid-LoadGen when time is up
    since = datetime.now(timezone.utc)
    stage, result = _stage_thread(params, "fp32", host, compiled, tmp_path / "out")
    tag = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"device:{host}", "variant:fp32"]))

    def mine():
        with farm.api(), get_client(sync_client=True) as client:
            runs = [r for r in client.read_flow_runs(flow_run_filter=tag) if r.created >= since]
        return runs[0] if runs else None

    job_pid = None
    while stage.is_alive():
        r = mine()
        if job_pid is None and r is not None and r.state.is_running() and r.infrastructure_pid:
            job_pid = int(str(r.infrastructure_pid).rsplit(":", 1)[-1])
        time.sleep(0.3)
    assert isinstance(result.get("error"), FarmError) and "did not finish within timeout_s = 40 s" in str(
        result["error"]
    )
    assert job_pid is not None, "the job never ran: the machine is too loaded for this test's 40 s"
    deadline = time.monotonic() + 60
    while (alive := _alive(job_pid)) or not mine().state.is_cancelled():
        assert time.monotonic() < deadline, (alive, mine().state)
        time.sleep(0.5)
    time.sleep(3)  # had the job gone on, it would upload now
    run_id = str(mine().id)
    assert [k for k in farm_store(farm, host).list(f"results/{run_id}/")] == []
    assert not (tmp_path / "out").exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_prefect_server_killed_mid_deploy_fails_soon_with_a_clear_message(local_s3, compiled, tmp_path, monkeypatch):
    """The stage's own Prefect server (and a worker on it) dies while the job runs: the stage fails within
    seconds, not Prefect's ~75 s of retries, naming the server and the fix; the stage output is not made."""
    import json

    from prefect.client.orchestration import get_client

    from greenpipe.farm.auth import HOST_KEYS_ENV, FarmSecrets, api_settings, write_private
    from greenpipe.farm.client import FarmError
    from greenpipe.farm.prefect_server import LocalPrefect
    from greenpipe.farm.stack import ensure_pool, start_worker, wait_polled

    endpoint, bucket = local_s3
    host = "cpu-host-5"
    secrets = FarmSecrets.load_or_create(tmp_path / "state", [host])
    server = LocalPrefect(tmp_path / "prefect", api_auth=secrets.api_auth)
    url = server.start()
    worker = None
    try:
        ensure_pool(url, POOL, [host], secrets.api_auth)
        worker = start_worker(url, endpoint, POOL, host, host, tmp_path / "state", secrets=secrets)
        wait_polled(url, POOL, [host], timeout_s=90, workers=[worker], api_auth=secrets.api_auth)
        keys = tmp_path / "state" / "host-keys.json"
        write_private(keys, json.dumps(secrets.host_keys))
        for k, v in {"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": secrets.api_auth, HOST_KEYS_ENV: str(keys),
                     "GREENPIPE_FARM_BUCKET": bucket, "GREENPIPE_FARM_PREFIX": "farm-tests",
                     **endpoint.env()}.items():  # fmt: skip
            monkeypatch.setenv(k, v)
        params = remote_params(**{host: {"timeout_s": 120, "retries": 0}})
        stage, result = _stage_thread(_loadgen_s(params, 60.0), "ptq8", host, compiled, tmp_path / "out")
        deadline = time.monotonic() + 120
        while True:
            with api_settings(url, secrets.api_auth), get_client(sync_client=True) as client:
                runs = client.read_flow_runs()
            if runs and runs[0].state.is_running():
                break
            assert time.monotonic() < deadline and stage.is_alive(), result
            time.sleep(0.3)
        os.killpg(server._proc.pid, signal.SIGKILL)  # the server dies mid-job
        t_kill = time.monotonic()
        stage.join(timeout=90)
        took = time.monotonic() - t_kill
        assert not stage.is_alive()
        msg = str(result.get("error"))
        assert isinstance(result.get("error"), FarmError), result
        assert f"lost the Prefect server at {url}" in msg and "greenpipe farm up" in msg and f"device '{host}'" in msg
        assert took < 40, took
        assert not (tmp_path / "out").exists()
    finally:
        if worker is not None:
            worker.kill()
        server.stop()


def _loadgen_s(params, seconds: float):
    """``params`` with LoadGen SingleStream and Offline each running ``seconds``."""
    update = {"single_stream_s": seconds, "offline_s": seconds}
    return params.model_copy(update={"deploy": params.deploy.model_copy(update=update)})


def _stage_thread(params, variant: str, device: str, ws, out: Path) -> tuple[threading.Thread, dict]:
    """The deploy stage running in a thread; the dict gets its ``error`` (or ``metrics``) when it ends."""
    result: dict = {}

    def run() -> None:
        try:
            result["metrics"] = deploy_stage(params, variant, device, compiled_dir(ws, variant), ws.data, out)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    stage = threading.Thread(target=run)
    stage.start()
    return stage, result
