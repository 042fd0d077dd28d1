"""`greenpipe farm up / status / down`: the loopback stack starts in the background, serves, stops clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from greenpipe.farm.auth import FarmSecrets
from greenpipe.farm.s3server import S3Endpoint, _pid_alive
from tests.stage_fixtures import ROOT


def _farm(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "GREENPIPE_", "AWS_"))}
    env["GREENPIPE_FARM_DIR"] = str(tmp_path / "farm")
    return subprocess.run([sys.executable, "-m", "greenpipe.cli", "farm", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_farm_up_status_down(tmp_path):
    up = _farm(tmp_path, "up", "--host", "cpu-host-1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Prefect API  http://127.0.0.1:" in up.stdout and "cpu-host-1 (queue cpu-host-1)" in up.stdout

        st = _farm(tmp_path, "status", "--json")
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert status["up"] and status["pool"] == "cpu-hosts" and status["hosts"] == ["cpu-host-1"]
        assert status["prefect"].startswith("http://127.0.0.1:") and status["s3"].startswith(
            "http://127.0.0.1:"
        )
        assert status["workers_alive"] == {"cpu-host-1": True}
        assert status["queues"]["cpu-host-1"]["last_polled_s"] is not None

        _check_locked_down(tmp_path / "farm", status["prefect"])

        again = _farm(tmp_path, "up")
        assert again.returncode == 2 and "already runs" in again.stderr
        farm = json.loads((tmp_path / "farm" / "farm.json").read_text())
        pids = [farm["pid"], *farm["worker_pids"].values()]

        # A worker dies (its parent, the supervisor, has not reaped it): status sees it, by name.
        os.kill(farm["worker_pids"]["cpu-host-1"], signal.SIGKILL)
        time.sleep(1)
        st = _farm(tmp_path, "status", "--json")
        processes = json.loads(st.stdout)["processes"]
        assert processes == {"supervisor": True, "prefect server": True, "s3 server": True,
                             "s3 server cpu-host-1": True, "worker cpu-host-1": False}, processes  # fmt: skip
        plain = _farm(tmp_path, "status")
        assert plain.returncode == 1 and "dead: worker cpu-host-1" in plain.stdout, plain.stdout
    finally:
        down = _farm(tmp_path, "down")
    assert down.returncode == 0 and "farm stopped" in down.stdout, down.stdout + down.stderr
    assert not any(_pid_alive(p) for p in pids)
    assert _farm(tmp_path, "status").returncode == 1
    assert "no farm was running" in _farm(tmp_path, "down").stdout


def _check_locked_down(state: Path, api_url: str) -> None:
    """The stack `farm up` started: authenticated API, private files, no secret on any command line."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{api_url}/admin/version", timeout=10)
    assert refused.value.code == 401
    secrets = FarmSecrets.load(state)
    assert set(secrets.host_keys) == {"cpu-host-1"} and secrets.api_auth.startswith("greenpipe:")
    modes = {p: p.stat().st_mode & 0o777 for p in (state, state / "secrets.json", state / "s3-root",
                                                    state / "prefect" / "prefect" / "prefect.db")}  # fmt: skip
    assert list(modes.values()) == [0o700, 0o600, 0o700, 0o600], modes
    farm = json.loads((state / "farm.json").read_text())
    server = json.loads((state / "prefect" / "prefect.json").read_text())["pid"]  # a session of its own
    group = {farm["pid"], server, *farm["worker_pids"].values()}
    procs = [p for p in (int(d) for d in os.listdir("/proc") if d.isdigit()) if _session(p) in group]
    assert len(procs) >= 4  # supervisor, Prefect server, rclone, worker
    s3_secret = S3Endpoint.load(state / "s3").secret_key
    for pid in procs:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        for secret in (secrets.api_auth, s3_secret, *secrets.host_keys.values()):
            assert secret not in cmdline, cmdline


def _session(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (FileNotFoundError, IndexError, ValueError):
        return -1


@pytest.mark.slow
def test_farm_up_after_a_partial_failure_cleans_up_and_starts_clean(tmp_path):
    """A child dies (status names it; up stops the rest and starts clean); then the supervisor itself is
    SIGKILLed, leaving its servers and worker running (status sees them; up stops them and starts clean);
    down leaves no process of any of the three farms behind."""
    state = tmp_path / "farm"
    assert _farm(tmp_path, "up", "--host", "cpu-host-1").returncode == 0
    every_pid: set[int] = set()
    try:
        first = _procs(state)
        every_pid |= set(first.values())
        assert set(first) == {"supervisor", "prefect server", "s3 server", "s3 server cpu-host-1",
                              "worker cpu-host-1"}  # fmt: skip
        os.kill(first["s3 server cpu-host-1"], signal.SIGKILL)  # a child of the supervisor, left unreaped
        time.sleep(1)
        st = _farm(tmp_path, "status")
        assert st.returncode == 1 and "dead: s3 server cpu-host-1" in st.stdout, st.stdout
        assert json.loads(_farm(tmp_path, "status", "--json").stdout)["processes"] == {
            **{name: True for name in first}, "s3 server cpu-host-1": False}

        again = _farm(tmp_path, "up", "--host", "cpu-host-1")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "had failed (dead: s3 server cpu-host-1)" in again.stdout and "started clean" in again.stdout
        assert not any(_pid_alive(p) for p in first.values())
        second = _procs(state)
        every_pid |= set(second.values())
        assert not set(second.values()) & set(first.values())
        st = _farm(tmp_path, "status", "--json")
        assert st.returncode == 0 and all(json.loads(st.stdout)["processes"].values()), st.stdout

        os.kill(second["supervisor"], signal.SIGKILL)  # its children live on, orphaned
        time.sleep(1)
        st = _farm(tmp_path, "status")
        assert st.returncode == 1 and "farm is down" in st.stdout and "dead: supervisor" in st.stdout, st.stdout
        assert "still running: prefect server, s3 server, s3 server cpu-host-1, worker cpu-host-1" in st.stdout
        third_up = _farm(tmp_path, "up", "--host", "cpu-host-1")
        assert third_up.returncode == 0, third_up.stdout + third_up.stderr
        assert "had failed (dead: supervisor)" in third_up.stdout
        assert not any(_pid_alive(p) for p in second.values())
        every_pid |= set(_procs(state).values())
    finally:
        down = _farm(tmp_path, "down")
    assert down.returncode == 0 and "farm stopped" in down.stdout, down.stdout + down.stderr
    assert not any(_pid_alive(p) for p in every_pid)
    # Nothing alive in their sessions either (a zombie whose parent is gone waits for init, not for us).
    assert not [p for p in (int(d) for d in os.listdir("/proc") if d.isdigit())
                if _session(p) in every_pid and _pid_alive(p)]  # fmt: skip


def _procs(state: Path) -> dict[str, int]:
    return {name: r["pid"] for name, r in json.loads((state / "farm.json").read_text())["procs"].items()}
