"""Attacks on the farm's control plane, against the real loopback stack (Prefect server, rclone S3, workers).

An attacker on the same network reaches the Prefect API: without the auth string it is refused; with it
(a leaked string, a compromised build host) it still cannot change what a device host's job runs or its
environment, because the work pool's template admits no job variables.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request

import pytest

from greenpipe.farm.deployment import JOB_COMMAND, deployment_name, ensure_deployment
from greenpipe.farm.stack import INHERITED_ENV, worker_env
from tests.farm.conftest import POOL


def _call(url: str, auth: str | None, post: bool = False) -> int:
    req = urllib.request.Request(url, data=b"{}" if post else None, method="POST" if post else "GET",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_an_unauthenticated_client_is_refused(farm_prefect):
    api, auth = farm_prefect.api_url, farm_prefect.secrets.api_auth
    user = auth.split(":", 1)[0]
    for wrong in (None, f"{user}:guess", "admin:admin", auth + "x"):
        assert _call(f"{api}/admin/version", wrong) == 401, wrong
        assert _call(f"{api}/csrf-token?client=attacker", wrong) == 401, wrong  # no token without the string
        # A state-changing request meets the CSRF check first, then auth: refused either way.
        assert _call(f"{api}/work_pools/filter", wrong, post=True) in (401, 403), wrong
    assert _call(f"{api}/admin/version", auth) == 200
    # The right string, but no CSRF token: a state-changing request is still refused.
    assert _call(f"{api}/work_pools/filter", auth, post=True) == 403
    # Prefect's own client without the string fails; with it (it fetches CSRF tokens itself) it works.
    from prefect.client.orchestration import get_client

    from greenpipe.farm.auth import api_settings

    with api_settings(api, None), get_client(sync_client=True) as client, pytest.raises(Exception, match="401"):
        client.read_work_pools()
    with api_settings(api, auth), get_client(sync_client=True) as client:
        assert isinstance(client.read_work_pools(), list)
    # Only the health check answers anyone (liveness probes).
    with urllib.request.urlopen(f"{api}/health", timeout=10) as r:
        assert r.status == 200


def test_a_run_that_overrides_command_or_env_is_refused_before_it_starts(farm, tmp_path):
    """With a valid auth string, ask for a job that runs `touch MARKER` or changes the environment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.deployments import run_deployment

    marker = tmp_path / "pwned"
    attacks = {
        "attack-command": {"command": f"touch {marker}"},
        "attack-env": {"env": {"PYTHONSTARTUP": str(marker), "AWS_SECRET_ACCESS_KEY": "x"}},
        "attack-workdir": {"working_dir": str(tmp_path)},
        "attack-dotted": {"env.PATH": str(tmp_path)},
    }
    with farm.api(), get_client(sync_client=True) as client:
        name = ensure_deployment(client, POOL)
        for run_name, job_variables in attacks.items():
            with pytest.raises(Exception, match="Additional properties are not allowed") as err:
                run_deployment(name, parameters={}, job_variables=job_variables, work_queue_name="cpu-host-1",
                               timeout=0, flow_run_name=run_name)  # fmt: skip
            assert "422 Unprocessable Entity" in str(err.value) and repr(next(iter(job_variables))) in str(err.value)
        # Refused at creation: no flow run exists for a worker to pick up, so nothing ran.
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=list(attacks))))
        assert runs == []
        # Nor can a deployment carry such variables.
        with pytest.raises(Exception, match="Additional properties are not allowed"):
            client.create_deployment(flow_id=client.create_flow_from_name("device-run"), name="evil",
                                     work_pool_name=POOL, entrypoint="flows/device_run.py:device_run",
                                     job_variables={"command": f"touch {marker}"})  # fmt: skip
        pool = client.read_work_pool(POOL)
    time.sleep(3)  # three worker polls: had anything been queued, it would have started
    assert not marker.exists()
    template = pool.base_job_template
    assert template["job_configuration"]["command"] == JOB_COMMAND and template["job_configuration"]["env"] == {}
    assert template["variables"] == {"type": "object", "properties": {}, "additionalProperties": False}
    assert deployment_name(POOL) == name


def test_workers_get_an_explicit_environment(tmp_path, monkeypatch):
    """Nothing of the starting process's environment reaches a worker (and so its jobs) unless allowed."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-controllers-own")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "evil"))
    env = worker_env("http://127.0.0.1:1/api", None, "cpu-host-1", tmp_path, api_auth="greenpipe:x",
                     key_file=tmp_path / "agent.key")  # fmt: skip
    assert "GITHUB_TOKEN" not in env and "PYTHONPATH" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    given = {"PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_HOME", "PREFECT_WORKER_QUERY_SECONDS",
             "PREFECT_WORKER_HEARTBEAT_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK",
             "GREENPIPE_AGENT_DIR", "GREENPIPE_AGENT_HOST", "GREENPIPE_AGENT_CACHE", "GREENPIPE_AGENT_KEY_FILE",
             "PYTHONUNBUFFERED", "PATH"}  # fmt: skip
    assert set(env) <= given | set(INHERITED_ENV)
    assert env["GREENPIPE_AGENT_KEY_FILE"] == str(tmp_path / "agent.key")


def test_secrets_are_never_on_a_command_line_and_files_are_private(farm, farm_prefect, local_s3_server):
    """The running server, S3 server and workers: no secret in any /proc/<pid>/cmdline; 0600 / 0700 files."""
    secrets = [farm.secrets.api_auth, farm.endpoint.secret_key, *farm.secrets.host_keys.values()]
    server = json.loads((farm_prefect.server.state_dir / "prefect.json").read_text())["pid"]
    pids = [w.pid for w in farm.workers.values()] + [server, local_s3_server.status().pid]
    procs = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    children = [p for p in procs if _ppid(p) in pids]
    checked = 0
    for pid in set(pids + children):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except FileNotFoundError:
            continue
        checked += 1
        for secret in secrets:
            assert secret not in cmdline, f"pid {pid}"
    assert checked >= len(farm.workers) + 2
    assert (farm_prefect.state_dir / "secrets.json").stat().st_mode & 0o777 == 0o600
    home = farm_prefect.server.state_dir / "prefect"
    assert home.stat().st_mode & 0o777 == 0o700 and (home / "prefect.db").stat().st_mode & 0o777 == 0o600
    assert local_s3_server.root.stat().st_mode & 0o777 == 0o700
    for w in farm.workers.values():
        key = farm.state_dir / "workers" / w.host / "agent.key"
        assert key.stat().st_mode & 0o777 == 0o600 and (key.parent.stat().st_mode & 0o777) == 0o700
        assert key.read_text().strip() == farm.secrets.host_keys[w.host]


def _ppid(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError, ValueError):
        return -1
