"""infra/prefect.yaml: `prefect deploy` from the repository root accepts it, on a real Prefect server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from greenpipe.params import load_params

ROOT = Path(__file__).resolve().parents[2]
PREFECT_FILE = ROOT / "infra" / "prefect.yaml"


def _prefect(args: list[str], api: str, home: Path) -> str:
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_HOME=str(home))
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _deployment(api: str):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_deployment_by_name("greenpipe-nightly/nightly")

    with temporary_settings({PREFECT_API_URL: api}):
        return asyncio.run(read())


def test_schedule_is_a_valid_cron_and_matches_params():
    (dep,) = yaml.safe_load(PREFECT_FILE.read_text())["deployments"]
    (sched,) = dep["schedules"]
    cron = CronSchedule(cron=sched["cron"], timezone=sched["timezone"])  # Prefect's own validation
    nightly = load_params(ROOT / "params.yaml").nightly
    assert (cron.cron, cron.timezone) == (nightly.cron, nightly.timezone) == ("0 2 * * *", "UTC")


def test_prefect_deploy_from_repo_root_creates_the_scheduled_deployment(prefect_server, tmp_path):
    _prefect(
        ["work-pool", "create", "build-host", "--type", "process", "--overwrite"], prefect_server, tmp_path
    )
    _prefect(["deploy", "--prefect-file", "infra/prefect.yaml", "--all"], prefect_server, tmp_path)
    d = _deployment(prefect_server)
    (s,) = d.schedules
    assert (s.schedule.cron, s.schedule.timezone, s.active) == ("0 2 * * *", "UTC", True)
    assert (d.entrypoint, d.work_pool_name, d.work_queue_name) == (
        "flows/nightly.py:nightly",
        "build-host",
        "nightly",
    )
    # The worker runs the flow in the checkout `prefect deploy` ran from.
    assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    assert not (ROOT / "prefect.yaml").exists()  # nothing written into the checkout

    # Another time zone at deploy time, same file.
    _prefect(
        ["deploy", "--prefect-file", "infra/prefect.yaml", "--all", "--timezone", "Europe/Berlin"],
        prefect_server,
        tmp_path,
    )
    (s,) = _deployment(prefect_server).schedules
    assert (s.schedule.cron, s.schedule.timezone) == ("0 2 * * *", "Europe/Berlin")


def test_nightly_serve_registers_the_same_schedule(prefect_server, tmp_path):
    """`greenpipe nightly serve` (flow.serve) puts a deployment on the server with params.yaml's cron."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenpipe.cli", "nightly", "serve", "--name", "serve-test"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    async def find():
        async with get_client() as client:
            for _ in range(240):
                if proc.poll() is not None:
                    return None
                try:
                    return await client.read_deployment_by_name("greenpipe-nightly/serve-test")
                except ObjectNotFound:  # not registered yet: serve is still starting
                    await asyncio.sleep(0.5)
            return None

    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            d = asyncio.run(find())
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert d is not None, f"serve never registered its deployment:\n{out[-3000:]}"
    (s,) = d.schedules
    assert (s.schedule.cron, s.schedule.timezone) == ("0 2 * * *", "UTC")
    assert d.parameters == {"root": str(ROOT), "params": "params.yaml"}
