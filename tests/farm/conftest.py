"""Fixtures for the farm tests: compiled fp32 / ptq8 UNets and two simulated hosts on real loopback servers.

``farm_hosts`` starts one Prefect process worker per simulated host (``cpu-host-1``, ``cpu-host-2``) on
the session's authenticated Prefect server (``farm_prefect``), each with the auth string, its own signing
key and its own S3 server over the session's store folder (``local_s3_server``), whose key writes only
below ``farm-tests/hosts/<host>/``, as ``greenpipe farm up`` sets a host up; ``farm`` points one test's environment at them, as the deploy stage
reads it (PREFECT_API_URL, PREFECT_API_AUTH_STRING, GREENPIPE_FARM_HOST_KEYS, GREENPIPE_FARM_BUCKET,
AWS_*).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import json

from greenpipe.farm.auth import HOST_KEYS_ENV, FarmSecrets, api_settings, write_private
from greenpipe.farm.s3server import HostView, LocalS3
from greenpipe.farm.stack import Worker, ensure_pool, start_worker, wait_polled
from greenpipe.params import DeviceParams, Params
from tests.stage_fixtures import Workspace, compiled_ptq8, stage_params

POOL = "cpu-hosts"
PREFIX = "farm-tests"
HOSTS = ("cpu-host-1", "cpu-host-2")


@dataclass
class Farm:
    api_url: str
    endpoint: object
    bucket: str
    state_dir: Path
    secrets: FarmSecrets
    workers: dict[str, Worker] = field(default_factory=dict)
    host_s3: dict[str, LocalS3] = field(default_factory=dict)  # each host's own, confined S3 server

    def start(self, host: str, queue: str | None = None) -> Worker:
        """(Re)start the worker of ``host`` and wait until it polls its queue."""
        old = self.workers.get(host)
        if old is not None and old.proc.poll() is None:
            old.stop()
        w = start_worker(self.api_url, self.host_s3[host].endpoint, POOL, queue or host, host, self.state_dir,
                         secrets=self.secrets)  # fmt: skip
        self.workers[host] = w
        wait_polled(self.api_url, POOL, [w.queue], timeout_s=90, workers=[w], api_auth=self.secrets.api_auth)
        return w

    def api(self):
        """This process's Prefect settings for the farm's authenticated API (a context manager)."""
        return api_settings(self.api_url, self.secrets.api_auth)


def remote_params(**devices: dict) -> Params:
    """Tiny stage params whose catalog is ``local`` plus the given remote devices on POOL."""
    catalog = {"local": DeviceParams().model_dump()}
    for name, over in devices.items():
        catalog[name] = {
            "kind": "cpu", "host": over.get("queue", name), "pool": POOL, "queue": name,
            "runtime": "ort", "target": "cpu", "timeout_s": 90, "retries": 1, **over,
        }  # fmt: skip
    return stage_params(deploy={"devices": catalog})


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> Workspace:
    """A workspace with ptq8 and fp32 quantized and compiled for cpu (``root/compiled-<variant>``)."""
    from greenpipe.quant.stage import quantize_stage
    from tasks.compile import compile_stage

    ws = compiled_ptq8(tmp_path_factory.mktemp("farm-ws"))
    quantize_stage(ws.params, "fp32", ws.model, ws.calib, ws.data, ws.root / "quant-fp32")
    compile_stage(
        ws.params, "fp32", "cpu", ws.root / "quant-fp32", ws.data, ws.root / "compiled-fp32" / "cpu"
    )
    return ws


def compiled_dir(ws: Workspace, variant: str) -> Path:
    return ws.root / ("compiled" if variant == "ptq8" else f"compiled-{variant}")


@pytest.fixture(scope="session")
def farm_hosts(farm_prefect, local_s3, local_s3_server, tmp_path_factory) -> Iterator[Farm]:
    """Workers for cpu-host-1 and cpu-host-2, each with its own S3 server, for the whole session."""
    endpoint, bucket = local_s3
    secrets = farm_prefect.secrets
    ensure_pool(farm_prefect.api_url, POOL, HOSTS, secrets.api_auth)
    f = Farm(farm_prefect.api_url, endpoint, bucket, tmp_path_factory.mktemp("farm-state"), secrets)
    try:
        for host in HOSTS:
            f.host_s3[host] = LocalS3(local_s3_server.root, f.state_dir / "s3" / host,
                                      host_view=HostView(bucket, PREFIX, host))  # fmt: skip
            f.workers[host] = start_worker(farm_prefect.api_url, f.host_s3[host].start(), POOL, host, host,
                                           f.state_dir, secrets=secrets)  # fmt: skip
        wait_polled(farm_prefect.api_url, POOL, list(HOSTS), timeout_s=90, workers=list(f.workers.values()),
                    api_auth=secrets.api_auth)  # fmt: skip
        yield f
    finally:
        for w in f.workers.values():
            w.stop()
        for server in f.host_s3.values():
            server.stop()


@pytest.fixture
def farm(farm_hosts: Farm, monkeypatch: pytest.MonkeyPatch) -> Farm:
    """The farm, with this test's environment pointing the deploy stage at it (undone after the test)."""
    monkeypatch.setenv("PREFECT_API_URL", farm_hosts.api_url)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", farm_hosts.secrets.api_auth)
    keys = farm_hosts.state_dir / "host-keys.json"
    write_private(keys, json.dumps(farm_hosts.secrets.host_keys))
    monkeypatch.setenv(HOST_KEYS_ENV, str(keys))
    monkeypatch.setenv("GREENPIPE_FARM_BUCKET", farm_hosts.bucket)
    monkeypatch.setenv("GREENPIPE_FARM_PREFIX", PREFIX)
    for k, v in farm_hosts.endpoint.env().items():
        monkeypatch.setenv(k, v)
    return farm_hosts
