"""The nightly flow against a real Prefect server and a real S3 remote (both on loopback).

One synthetic project (tests/nightly/synthetic.py) goes through several nights in file order:
everything runs and is pushed and committed; nothing changed runs nothing; one variant's param change
reruns exactly its chain; the gate stays quiet on a small move and fires on a planted drop; a failed
branch leaves the other branch's results committed; the CLI prints what ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.nightly import nightly
from tests.nightly import synthetic

ROOT = Path(__file__).resolve().parents[2]
CHAIN_A = {"quantize@a", "compile@a", "deploy@a-local", "soak@a-local"}
pytestmark = pytest.mark.slow  # several flow runs: about a minute on a quiet 2-core machine


@pytest.fixture(scope="module")
def project(tmp_path_factory, local_s3, prefect_server):
    endpoint, bucket = local_s3
    ws = synthetic.make(
        tmp_path_factory.mktemp("nightly") / "ws",
        nightly={"dvc_push": True, "remote": "nightly", "retries": 1, "retry_delay_s": 0},
    )
    prefix = f"dvc-{uuid.uuid4().hex[:8]}"
    dvc = [sys.executable, "-m", "dvc", "remote"]
    synthetic.run([*dvc, "add", "nightly", f"s3://{bucket}/{prefix}"], ws)
    synthetic.run([*dvc, "modify", "nightly", "endpointurl", endpoint.url], ws)
    # The keys go to the checkout's untracked config.local, as on a build host.
    synthetic.run([*dvc, "modify", "--local", "nightly", "access_key_id", endpoint.access_key], ws)
    synthetic.run([*dvc, "modify", "--local", "nightly", "secret_access_key", endpoint.secret_key], ws)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name=endpoint.region,
    )
    return {"ws": ws, "api": prefect_server, "s3": s3, "bucket": bucket, "prefix": prefix}


def _night(project):
    synthetic.clear_timeline(project["ws"])
    with temporary_settings({PREFECT_API_URL: project["api"]}):
        state = nightly(root=str(project["ws"]), return_state=True)
    record = state.result(raise_on_failure=False)
    assert isinstance(record, dict), f"no run record: {record!r}"
    return state, record, {s["stage"]: s for s in record["stages"]}


def _ran(stages: dict) -> set[str]:
    return {s for s, o in stages.items() if o["status"] == "ran"}


def _git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws, check=True, capture_output=True, text=True).stdout.strip()


def test_first_night_runs_everything_pushes_and_commits(project):
    ws = project["ws"]
    head, branch = _git(ws, "rev-parse", "HEAD"), _git(ws, "symbolic-ref", "HEAD")
    state, record, stages = _night(project)
    assert state.is_completed(), state.message
    assert {o["status"] for o in stages.values()} == {"ran"} and len(stages) == 10
    assert record["status"] == "ok" and record["baseline"] is None
    # dvc push reached the S3 remote; the results commit is on its own branch, the checkout untouched.
    listed = project["s3"].list_objects_v2(Bucket=project["bucket"], Prefix=project["prefix"])
    assert listed.get("KeyCount", 0) >= 10
    assert (_git(ws, "rev-parse", "HEAD"), _git(ws, "symbolic-ref", "HEAD")) == (head, branch)
    assert _git(ws, "rev-parse", "nightly-results") == record["results_commit"]
    assert _git(ws, "show", "nightly-results:dvc.lock") == (ws / "dvc.lock").read_text().strip()


def test_no_change_night_runs_no_command(project):
    state, record, stages = _night(project)
    assert state.is_completed(), state.message
    assert record["commands_run"] == 0 and synthetic.timeline(project["ws"]) == []
    assert all(o["status"] == "up to date" for o in stages.values())


def test_param_change_reruns_exactly_that_variants_chain(project):
    synthetic.set_variant(project["ws"], "a", rev=1)
    state, _, stages = _night(project)
    assert state.is_completed(), state.message
    assert _ran(stages) == CHAIN_A
    assert {t[0] for t in synthetic.timeline(project["ws"])} == CHAIN_A
    # report was handed to DVC (its inputs were rewritten) and DVC found them identical.
    assert stages["report"]["status"] == "up to date" and stages["report"]["detail"] == ""


def _artifact(api: str, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC,
                limit=1,
            )
            return found[0]

    with temporary_settings({PREFECT_API_URL: api}):
        return asyncio.run(read())


def test_gate_quiet_on_a_small_move_and_fires_on_a_planted_drop(project):
    synthetic.set_variant(project["ws"], "a", gain=0.999)  # -0.03 dB, -0.1 % fps, +0.1 % mJ: inside
    state, record, _ = _night(project)
    assert state.is_completed(), state.message
    assert record["regressions"] == [] and record["baseline"] is not None
    good = record["results_commit"]

    synthetic.set_variant(project["ws"], "a", gain=0.99)  # score 29.97 -> 29.7 dB: past 0.1 dB
    state, record, _ = _night(project)
    assert state.is_failed()
    assert "regression" in state.message and "a-local score" in state.message
    (reg,) = record["regressions"]
    assert (reg["row"], reg["metric"], reg["unit"]) == ("a-local", "score", "dB")
    assert reg["worse_by"] == pytest.approx(0.27, abs=1e-6)
    assert record["baseline"]["commit"] == good and record["status"] == "regressed"

    md = _artifact(project["api"], "greenpipe-nightly-report").data
    assert md.index("## Regressions") < md.index("## Variant x device")
    assert "a-local" in md and good[:10] in md and "0.27 dB" in md
    table = _artifact(project["api"], "greenpipe-nightly-summary").data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {(r["variant"], r["device"]) for r in rows} == {("a", "local"), ("b", "local")}


def test_failed_branch_leaves_the_other_branch_committed(project):
    ws = project["ws"]
    synthetic.set_variant(ws, "b", fail=True)
    synthetic.set_variant(ws, "a", gain=1.01)
    state, record, stages = _night(project)
    assert state.is_failed() and "quantize@b" in state.message
    assert stages["quantize@b"]["status"] == "failed" and stages["quantize@b"]["attempts"] == 2  # 1 retry
    assert "planted failure" in stages["quantize@b"]["detail"]
    assert {s for s, o in stages.items() if o["status"] == "skipped"} == {
        "compile@b",
        "deploy@b-local",
        "soak@b-local",
        "report",
    }
    assert _ran(stages) == CHAIN_A
    commit = record["results_commit"]
    assert _git(ws, "rev-parse", "nightly-results") == commit
    deployed = json.loads(_git(ws, "show", f"{commit}:metrics/deploy/a-local.json"))
    assert deployed["score"] == pytest.approx(30.3)
    assert "gain: 1.01" in _git(ws, "show", f"{commit}:dvc.lock")
    assert json.loads(_git(ws, "show", f"{commit}:nightly.json"))["status"] == "failed"


def _cli_night(project) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_API_URL=project["api"], COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "greenpipe.cli", "nightly", "run", "--root", str(project["ws"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_run_of_a_failed_night_shows_its_stages_and_why(project):
    synthetic.set_variant(project["ws"], "b", fail=True)
    proc = _cli_night(project)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.count("│") > 3}
    assert "failed" in lines["quantize@b"] and "skipped" in lines["report"]
    assert "nightly failed" in proc.stderr and "quantize@b" in proc.stderr


def test_cli_run_shows_ran_and_cached_stages_with_durations(project):
    ws = project["ws"]
    synthetic.set_variant(ws, "b", fail=False)
    proc = _cli_night(project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "nightly stages" in out and "quantize@b" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "ran" in lines["quantize@b"] and "up to date" in lines["quantize@a"]
    assert "stage command(s) ran" in out


def test_cli_run_without_a_server_starts_one_that_requires_the_installs_auth_string(project, tmp_path):
    """No PREFECT_API_URL and no farm: the run's temporary server requires the install's one auth string
    (made on first use, 0600 in a 0700 farm dir, the same the farm uses), and the flow's process has it."""
    import base64
    import urllib.error
    import urllib.request

    from greenpipe.cli_nightly import _prefect_env
    from greenpipe.farm.auth import API_AUTH_ENV, FarmSecrets

    farm = tmp_path / "farm"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "PREFECT_API_AUTH"))}
    env.update(COLUMNS="200", GREENPIPE_FARM_DIR=str(farm))
    proc = subprocess.run([sys.executable, "-m", "greenpipe.cli", "nightly", "run", "--root", str(project["ws"])],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Prefect server: temporary, http://127.0.0.1:" in proc.stdout and "nightly stages" in proc.stdout
    secrets = FarmSecrets.load(farm)  # refuses a file others could read
    assert (farm.stat().st_mode & 0o777) == 0o700 and secrets.api_auth.startswith("greenpipe:")

    # The same server, held open: refused without the string, answered with what the flow gets.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENPIPE_FARM_DIR", str(farm))
        mp.delenv("PREFECT_API_URL", raising=False)
        with temporary_settings({PREFECT_API_URL: None}), _prefect_env(tmp_path) as flow_env:
            url = flow_env["PREFECT_API_URL"]
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{url}/admin/version", timeout=10)
            assert refused.value.code == 401 and flow_env[API_AUTH_ENV] == secrets.api_auth
            token = base64.b64encode(secrets.api_auth.encode()).decode()
            request = urllib.request.Request(f"{url}/admin/version", headers={"Authorization": f"Basic {token}"})
            with urllib.request.urlopen(request, timeout=10) as answered:
                assert answered.status == 200
