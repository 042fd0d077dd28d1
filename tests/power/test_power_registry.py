import dataclasses
import json
import subprocess
import sys

import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.power import METERS, SCOPES, MeterInfo, Sample, available, open_meter

# Every registered meter either opens on a real-format tree built here...
OPENS_ON_A_TEMP_TREE = {
    "rapl": lambda tree: {"root": tree["rapl"].root},
    "hwmon": lambda tree: {"root": tree["hwmon"].root},
    "estimate": lambda tree: {"proc_root": tree["proc"].root, "tdp_w": 50},
    "wallmeter": lambda tree: {"log": tree["wall"]},
}
# ...or needs hardware (an NVIDIA driver, an XRT card) and must then say what is missing.
NEEDS_HARDWARE = {"nvml", "xbutil"}


@pytest.fixture
def trees(rapl_tree, hwmon_tree, proc_tree, wall_log):
    return {"rapl": rapl_tree, "hwmon": hwmon_tree, "proc": proc_tree, "wall": wall_log}


def test_every_registered_meter_is_covered_here():
    assert set(METERS.names()) == set(OPENS_ON_A_TEMP_TREE) | NEEDS_HARDWARE


@pytest.mark.parametrize("name", sorted(OPENS_ON_A_TEMP_TREE))
def test_meter_samples_and_describes_itself(name, trees):
    options = OPENS_ON_A_TEMP_TREE[name](trees)
    ok, what = available(name, **options)
    assert ok, what
    with open_meter(name, **options) as meter:
        assert meter.name == name
        sample = meter.sample()
        info = meter.describe()
    assert isinstance(sample, Sample) and sample.t_wall > 1.6e9  # t may be < 0: a log reading from the past
    assert sample.watts is None or sample.watts >= 0
    assert isinstance(info, MeterInfo) and info.name == name and info.what == what
    assert info.scope in SCOPES and info.measured == (info.scope != "estimate")
    assert info.units and info.resolution
    json.dumps(sample.to_dict())  # what the soak stage checkpoints


@pytest.mark.parametrize("name", sorted(NEEDS_HARDWARE))
def test_hardware_meter_here_says_what_is_missing_and_the_fix(name):
    ok, why = available(name)
    if ok:
        pytest.skip(f"{name} hardware is present here: {why}")
    assert "Fix:" in why or "pip install" in why


def test_unknown_meter_option_and_missing_option():
    with pytest.raises(GreenpipeError, match="unknown power meter 'ipmi'; registered: estimate, hwmon"):
        open_meter("ipmi")
    with pytest.raises(GreenpipeError, match="has no option 'hz'; its options are: tdp_w, idle_w, pid"):
        open_meter("estimate", hz=10)
    with pytest.raises(GreenpipeError, match="needs option log="):
        open_meter("wallmeter")
    ok, why = available("wallmeter")
    assert not ok and "needs option log=" in why


def test_meter_info_rules():
    with pytest.raises(ValueError, match="scope 'wall'"):
        MeterInfo("x", "wall", "?", True, "W", "1 s")
    with pytest.raises(ValueError, match="measured must be False exactly"):
        MeterInfo("x", "estimate", "?", True, "W", "1 s")
    with pytest.raises(ValueError, match="measured must be False exactly"):
        MeterInfo("x", "card", "?", False, "W", "1 s")


def test_sample_is_frozen_and_stamped_with_both_clocks():
    sample = Sample.now(12.5, rails={"a": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.watts = 1.0
    assert sample.to_dict() == {"t": sample.t, "t_wall": sample.t_wall, "watts": 12.5, "energy_j": None,
                                "rails": {"a": 1.0}}


def test_import_has_no_side_effects():
    code = ("import sys, threading, greenpipe.power; "
            "print(sorted(m for m in ('pynvml', 'pyxrt', 'numpy') if m in sys.modules), "
            "threading.active_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] 1"  # no optional library loaded, no thread started
