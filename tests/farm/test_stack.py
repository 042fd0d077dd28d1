"""`greenpipe farm up / status / down`: the loopback stack starts in the background, serves, stops clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from greenpipe.farm.s3server import _pid_alive
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

        again = _farm(tmp_path, "up")
        assert again.returncode == 2 and "already runs" in again.stderr
        farm = json.loads((tmp_path / "farm" / "farm.json").read_text())
        pids = [farm["pid"], *farm["worker_pids"].values()]
    finally:
        down = _farm(tmp_path, "down")
    assert down.returncode == 0 and "farm stopped" in down.stdout, down.stdout + down.stderr
    assert not any(_pid_alive(p) for p in pids)
    assert _farm(tmp_path, "status").returncode == 1
    assert "no farm was running" in _farm(tmp_path, "down").stdout
