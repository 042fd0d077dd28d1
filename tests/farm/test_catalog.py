"""The device catalog (deploy.devices in params.yaml): what a remote device needs, and what is refused."""

from __future__ import annotations

import pytest

from greenpipe.errors import ParamsError
from greenpipe.params import DeviceParams
from tests.stage_fixtures import stage_params


def _catalog(**device) -> dict:
    return {"devices": {"local": DeviceParams().model_dump(), "dev": {"kind": "cpu", **device}}}


def test_the_repository_catalog_is_local_only_and_runs_in_process():
    devices = stage_params().deploy.devices
    assert list(devices) == ["local"] and devices["local"].host == "local"


def test_a_remote_device_with_pool_and_queue_is_accepted():
    dev = stage_params(deploy=_catalog(host="cpu-host-1", pool="cpu-hosts", queue="cpu-host-1", timeout_s=20,
                                       retries=2, batch=4)).deploy.devices["dev"]  # fmt: skip
    assert (dev.pool, dev.queue, dev.timeout_s, dev.retries, dev.batch) == (
        "cpu-hosts",
        "cpu-host-1",
        20,
        2,
        4,
    )


@pytest.mark.parametrize(
    "device, key, expected",
    [
        ({"host": "cpu-host-1", "queue": "cpu-host-1"}, "deploy.devices.dev", "pool"),
        ({"host": "cpu-host-1", "pool": "cpu-hosts"}, "deploy.devices.dev", "queue"),
        ({"runtime": "tensorrt"}, "deploy.devices.dev.runtime", "registered: openvino, openvino_bf16, ort, tflite, torch_cuda"),
        ({"batch": 0}, "deploy.devices.dev.batch", "greater than or equal to 1"),
        ({"batch": 2.5}, "deploy.devices.dev.batch", "valid integer"),
        ({"batch": "4"}, "deploy.devices.dev.batch", "valid integer"),
        ({"kind": "jetson"}, "deploy.devices.dev.kind", "'cpu', 'gpu', 'vck5000', 'zcu104' or 'ultra96'"),
        (
            {"host": "h", "pool": "p", "queue": "q", "timeout_s": 0},
            "deploy.devices.dev.timeout_s",
            "greater than 0",
        ),
        (
            {"host": "h", "pool": "p", "queue": "q", "retries": -1},
            "deploy.devices.dev.retries",
            "greater than",
        ),
        ({"target": "vck5000-8pe"}, "deploy.devices.dev.target", "not a compile target"),
    ],
)
def test_a_bad_device_fails_naming_the_key(device, key, expected):
    with pytest.raises(ParamsError) as err:
        stage_params(deploy=_catalog(**device))
    msg = str(err.value)
    assert expected in msg, msg
    assert f"  {key}" in msg, msg
