"""The device side is light: what a host imports to run flows/device_run.py (deploy and soak jobs) pulls in
no torch, TF or DVC."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.stage_fixtures import ROOT

PROBE = """
import json, sys
import flows.device_run, greenpipe.deploy, greenpipe.soak, greenpipe.runtime, greenpipe.bench.loadgen, greenpipe.store
import greenpipe.power
from greenpipe.recipes import get_recipe
get_recipe("denoise")
print(json.dumps(sorted(m for m in ("torch", "tensorflow", "dvc") if m in sys.modules)))
"""


def test_device_run_imports_no_torch_tensorflow_or_dvc():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_deployment_entrypoint_is_the_device_run_flow():
    from flows.device_run import device_run
    from greenpipe.farm.deployment import ENTRYPOINT, FLOW_NAME

    path, name = ENTRYPOINT.split(":")
    assert (ROOT / path).is_file() and name == "device_run" and device_run.name == FLOW_NAME
