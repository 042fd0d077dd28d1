"""Shared pytest set-up: the loopback S3 server fixtures, a small tmpfs, telemetry off, a private Prefect home."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

pytest_plugins = ["tests.s3fixture", "tests.prefectfixture", "tests.skipcheck", "tests.diskfixture"]


def _has_nvidia_gpu() -> bool:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def pytest_collection_modifyitems(config, items):
    """Skip hardware/toolchain tests with a reason saying what they need."""
    import pytest

    needs = {
        "gpu": (_has_nvidia_gpu, "needs an NVIDIA GPU (nvidia-smi -L lists none here)"),
        "vitis": (lambda: _has_module("pytorch_nndct") or _has_module("vart"),
                  "needs the Vitis AI toolchain (pytorch_nndct / vart) importable beside greenpipe"),
        "board": (lambda: os.environ.get("GREENPIPE_BOARD") is not None,
                  "needs a DPU board or card: set GREENPIPE_BOARD=<device name from params.yaml>"),
    }
    checked: dict[str, bool] = {}
    for item in items:
        for marker, (probe, reason) in needs.items():
            if item.get_closest_marker(marker) is not None:  # a marker, not a folder named like one (tests/vitis)
                if marker not in checked:
                    checked[marker] = probe()
                if not checked[marker]:
                    item.add_marker(pytest.mark.skip(reason=reason))
