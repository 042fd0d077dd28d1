"""Fixtures for the farm tests: compiled fp32 / ptq8 UNets and two simulated hosts on real loopback servers.

``farm_hosts`` starts one Prefect process worker per simulated host (``cpu-host-1``, ``cpu-host-2``) on
the session's Prefect server (``prefect_server``) and S3 server (``local_s3``); ``farm`` points one test's
environment at them, as the deploy stage reads it (PREFECT_API_URL, GREENPIPE_FARM_BUCKET, AWS_*).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from greenpipe.farm.stack import Worker, ensure_pool, start_worker, wait_polled
from greenpipe.params import DeviceParams, Params
from tests.stage_fixtures import Workspace, compiled_ptq8, stage_params

POOL = "cpu-hosts"
HOSTS = ("cpu-host-1", "cpu-host-2")


@dataclass
class Farm:
    api_url: str
    endpoint: object
    bucket: str
    state_dir: Path
    workers: dict[str, Worker] = field(default_factory=dict)

    def start(self, host: str, queue: str | None = None) -> Worker:
        """(Re)start the worker of ``host`` and wait until it polls its queue."""
        old = self.workers.get(host)
        if old is not None and old.proc.poll() is None:
            old.stop()
        w = start_worker(self.api_url, self.endpoint, POOL, queue or host, host, self.state_dir)
        self.workers[host] = w
        wait_polled(self.api_url, POOL, [w.queue], timeout_s=90, workers=[w])
        return w


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
def farm_hosts(prefect_server, local_s3, tmp_path_factory) -> Iterator[Farm]:
    """Workers for cpu-host-1 and cpu-host-2 on the session's servers, for the whole session."""
    endpoint, bucket = local_s3
    ensure_pool(prefect_server, POOL, HOSTS)
    f = Farm(prefect_server, endpoint, bucket, tmp_path_factory.mktemp("farm-state"))
    try:
        for host in HOSTS:
            f.workers[host] = start_worker(prefect_server, endpoint, POOL, host, host, f.state_dir)
        wait_polled(prefect_server, POOL, list(HOSTS), timeout_s=90, workers=list(f.workers.values()))
        yield f
    finally:
        for w in f.workers.values():
            w.stop()


@pytest.fixture
def farm(farm_hosts: Farm, monkeypatch: pytest.MonkeyPatch) -> Farm:
    """The farm, with this test's environment pointing the deploy stage at it (undone after the test)."""
    monkeypatch.setenv("PREFECT_API_URL", farm_hosts.api_url)
    monkeypatch.setenv("GREENPIPE_FARM_BUCKET", farm_hosts.bucket)
    monkeypatch.setenv("GREENPIPE_FARM_PREFIX", "farm-tests")
    for k, v in farm_hosts.endpoint.env().items():
        monkeypatch.setenv(k, v)
    return farm_hosts
