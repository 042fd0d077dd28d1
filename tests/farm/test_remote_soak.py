"""soak@V-D on remote devices through the real loopback stack: the soak runs on the host's worker, with its meter.

Run: python -m pytest -q -p no:cacheprovider tests/farm/test_remote_soak.py

The devices here are named apart from the deploy tests' (``soak-host-N``, served by the queues of
cpu-host-N) so that the two files' flow-run filters never see each other's runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from greenpipe.errors import GreenpipeError
from greenpipe.io import read_json
from greenpipe.params import DeviceParams, Params, load_params
from greenpipe.power.estimate import ESTIMATE_LABEL
from greenpipe.soak import POINTER_FILE, SERIES_FILE, StoreSeries, soak_stage
from tests.farm.conftest import POOL, compiled_dir
from tests.farm.test_remote_deploy import farm_store
from tests.stage_fixtures import ROOT
from tests.workspace import tiny_params

SOAK = {"idle_s": 0.3, "warmup_s": 0.5, "duration_s": 1.5, "window_s": 0.5, "sample_hz": 20,
        "overhead_pairs": 0, "overhead_block_s": 0.2}  # fmt: skip


def soak_params(path: Path, device: str, queue: str, soak: dict, **over) -> Params:
    """params.yaml (tiny) with ``local`` and remote ``device`` on ``queue`` of POOL, written to ``path``."""
    raw = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    options = {"meter": "estimate", "meter_options": {"pid": "self"}}  # the job's own CPU share
    raw["deploy"]["devices"] = {
        "local": {**DeviceParams().model_dump(), **options},
        device: {"kind": "cpu", "host": queue, "pool": POOL, "queue": queue, "runtime": "ort", "target": "cpu",
                 "timeout_s": 120, "retries": 1, **options, **over},
    }  # fmt: skip
    raw["soak"] = soak
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def _series(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _measured(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("kind") == "window" and r["phase"] == "measure"]


def test_remote_soak_has_a_local_soaks_shape_and_names_its_host(farm, compiled, tmp_path):
    device, host = "soak-host-1", "cpu-host-1"
    params = soak_params(tmp_path / "params.yaml", device, host, SOAK)
    art = compiled_dir(compiled, "fp32")
    local = soak_stage(params, "fp32", "local", art, tmp_path / "ckpt-local", tmp_path / "local")
    ckpt = tmp_path / "ckpt-remote"
    remote = soak_stage(params, "fp32", device, art, ckpt, tmp_path / "remote")

    # The same figures, windows and files as a soak in this process.
    assert set(remote) == set(local)
    assert remote["partial"] is False and remote["resumed"] is False
    assert remote["windows_done"] == remote["windows_planned"] == local["windows_planned"] == 3
    assert remote["fps"] > 0 and remote["avg_w"] > 0 and remote["idle_w"] > 0
    assert remote["energy_j"] == pytest.approx(remote["avg_w"] * remote["measured_s"])
    assert [t["phase"] for t in remote["timeline"]] == [t["phase"] for t in local["timeline"]]
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["soak.json", SERIES_FILE]
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["soak.json", SERIES_FILE]
    assert read_json(tmp_path / "remote" / "soak.json") == json.loads(json.dumps(remote))
    lines = _series(tmp_path / "remote" / SERIES_FILE)
    assert lines[0]["kind"] == "header" and len(_measured(lines)) == 3
    assert not ckpt.exists()  # nothing in progress any more

    # Provenance: the host's meter, estimated and labelled so, on the host's clock, with the host's facts.
    assert remote["meter"] == {**local["meter"], "what": remote["meter"]["what"]}
    assert remote["meter"]["name"] == "estimate" and remote["power_measured"] is False
    assert remote["power_source"].startswith(ESTIMATE_LABEL) and ESTIMATE_LABEL in remote["source"]
    assert remote["host"]["name"] == host and remote["host"]["runtime"] == "ort"
    assert local["host"]["name"] == socket.gethostname()
    assert remote["source"].startswith(f"soak on {host} (") and "ONNX Runtime" in remote["source"]
    assert f"{host}'s clock, not the build host's" in remote["clock"]
    assert "device host" not in local["clock"]
    assert remote["artifact"] == local["artifact"]  # the build host's path of what was soaked

    # Every record went to the farm's store as it closed, under the run's result prefix.
    store = farm_store(farm, host)
    run_id = remote["store"]["run_id"]
    assert remote["store"]["results"] == f"results/{run_id}/soak/" and remote["store"]["errors"] == 0
    assert remote["store"]["signed"] is True
    stored = StoreSeries.read(store, run_id, "soak/", (host, farm.secrets.host_keys))
    assert stored == lines  # the stored series is the returned one
    summary = store.get_json(f"results/{run_id}/summary.json")["body"]
    assert summary["stage"] == "soak" and summary["complete"] and summary["heavy_modules"] == []
    assert summary["host"]["name"] == host


@pytest.mark.slow
def test_a_soak_killed_on_its_host_keeps_its_windows_and_resumes(farm, compiled, tmp_path):
    """SIGKILL the job process mid-soak: the stage fails naming device, pool and queue; the store holds every
    window closed before the kill (at most the one in progress is lost); --report-partial reports them marked
    partial; running the stage again resumes after them."""
    from prefect.client.orchestration import get_client

    device, host = "soak-host-2", "cpu-host-2"
    plan = {**SOAK, "duration_s": 6.0, "window_s": 1.0}
    params = soak_params(tmp_path / "params.yaml", device, host, plan, retries=0)
    art, ckpt, out = compiled_dir(compiled, "ptq8"), tmp_path / "ckpt", tmp_path / "out"
    store = farm_store(farm, host)
    stage, result, run_id = _soak_until_two_windows(farm, params, device, host, art, ckpt, out)
    with farm.api(), get_client(sync_client=True) as client:
        job_pid = int(str(client.read_flow_run(run_id).infrastructure_pid).rsplit(":", 1)[-1])
    os.kill(job_pid, signal.SIGKILL)  # the job dies with its window open; the worker lives on
    t_kill = time.time()
    stage.join(timeout=120)
    assert not stage.is_alive()

    # retries = 0: the stage fails at once, naming where and what is kept.
    err = result.get("error")
    assert isinstance(err, GreenpipeError), result
    msg = str(err)
    assert f"device {device!r}" in msg and f"work pool {POOL!r}" in msg and f"queue {host!r}" in msg, msg
    assert "retries = 0" in msg and "--report-partial" in msg and "resumes from them" in msg
    assert not out.exists()

    # At most one window lost: every window closed up to the last second before the kill is in the store.
    stored = StoreSeries.read(store, run_id, "soak/", (host, farm.secrets.host_keys))
    windows = _measured(stored)
    kept = len(windows)
    assert kept >= 2 and [w["index"] for w in windows] == list(range(kept))
    assert f"{kept} of 6 measured windows" in msg
    assert t_kill - windows[-1]["t_wall_end"] < plan["window_s"] + 0.5  # the window in progress at most

    cmd = [sys.executable, "-m", "tasks.soak", "--variant", "ptq8", "--device", device, "--compiled", str(art),
           "--checkpoint", str(ckpt), "--out", str(out), "--metrics", str(tmp_path / "metrics.json"),
           "--params", str(tmp_path / "params.yaml")]  # fmt: skip
    partial = subprocess.run([*cmd, "--report-partial"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert partial.returncode == 0, partial.stderr
    p = read_json(tmp_path / "metrics.json")
    assert p["partial"] is True and p["partial_note"].startswith("PARTIAL") and host in p["partial_note"]
    assert p["windows_done"] == kept and p["windows_planned"] == 6 and p["fps"] > 0
    assert p["host"]["name"] == host and p["power_measured"] is False and "clock" in p
    assert read_json(out / "partial.json")["partial"] is True

    # Run again: the new run resumes after the stored windows (same soak key) and completes.
    m = soak_stage(params, "ptq8", device, art, ckpt, out)
    assert m["partial"] is False and m["resumed"] is True and m["windows_done"] == 6
    assert m["resumes"][0]["after_window"] == kept and m["resumes"][0]["gap_s"] > 0
    assert [t["index"] for t in m["timeline"] if t["phase"] == "measure"] == list(range(6))
    assert m["store"]["run_id"] != run_id and not ckpt.exists()
    assert _measured(_series(out / SERIES_FILE))[:kept] == windows  # the killed run's windows, as stored


@pytest.mark.slow
def test_a_worker_killed_mid_soak_fails_clearly_counts_nothing_and_a_rerun_completes(farm, compiled, tmp_path):
    """The whole host goes (its worker and the job, SIGKILL) after two windows: once its queue is unpolled
    for lost_after_s the stage fails naming the device and the lost host, writes no metrics (nothing partial
    counted), and with the worker back the stage run again completes, resuming after the stored windows."""
    device, host = "soak-host-1", "cpu-host-1"
    plan = {**SOAK, "duration_s": 6.0, "window_s": 1.0}
    params = soak_params(tmp_path / "params.yaml", device, host, plan, retries=0, lost_after_s=20)
    art, ckpt, out = compiled_dir(compiled, "ptq8"), tmp_path / "ckpt", tmp_path / "out"
    store = farm_store(farm, host)
    try:
        stage, result, run_id = _soak_until_two_windows(farm, params, device, host, art, ckpt, out)
        farm.workers[host].kill()  # the worker's process group: worker and job at once
        stage.join(timeout=120)
        assert not stage.is_alive()
    finally:
        farm.start(host)  # the host comes back (also for the tests after this one)

    err = result.get("error")
    assert isinstance(err, GreenpipeError), result
    msg = str(err)
    assert f"device {device!r}" in msg and f"queue {host!r}" in msg and "host lost" in msg, msg
    assert "retries = 0" in msg and "--report-partial" in msg
    assert not out.exists()  # no metrics, no series: nothing of the lost run counted
    kept = len(_measured(StoreSeries.read(store, run_id, "soak/", (host, farm.secrets.host_keys))))
    assert kept >= 2 and f"{kept} of 6 measured windows" in msg

    m = soak_stage(params, "ptq8", device, art, ckpt, out)
    assert m["partial"] is False and m["resumed"] is True and m["windows_done"] == 6
    assert m["resumes"][0]["after_window"] == kept
    assert m["store"]["run_id"] != run_id and not ckpt.exists()


def _soak_until_two_windows(farm, params, device: str, host: str, art, ckpt, out):
    """The ptq8 soak stage on ``device`` in a thread, returned once its run has stored two measured
    windows: ``(thread, result dict that gets its error or metrics, flow run id)``."""
    result: dict = {}

    def run() -> None:
        try:
            result["metrics"] = soak_stage(params, "ptq8", device, art, ckpt, out)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    stage = threading.Thread(target=run)
    stage.start()
    deadline = time.monotonic() + 300  # job start-up (spawn, imports, pull) is slow on a loaded machine
    while not (ckpt / POINTER_FILE).is_file():
        assert time.monotonic() < deadline and stage.is_alive(), result
        time.sleep(0.1)
    run_id = read_json(ckpt / POINTER_FILE)["runs"][-1]
    store = farm_store(farm, host)
    while len(_measured(StoreSeries.read(store, run_id, "soak/", (host, farm.secrets.host_keys)))) < 2:
        assert time.monotonic() < deadline and stage.is_alive(), result
        time.sleep(0.1)
    return stage, result, run_id
