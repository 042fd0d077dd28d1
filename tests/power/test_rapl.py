import os
import time

import pytest

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.power.rapl import RaplMeter, unwrap_delta


def test_discovers_zones_and_sums_package_plus_dram(rapl_tree):
    rapl_tree.set(package_0=1_000_000, core=400_000, dram=500_000)
    meter = RaplMeter(root=rapl_tree.root)
    time.sleep(0.02)
    rapl_tree.set(package_0=3_000_000, core=1_200_000, dram=1_000_000)
    sample = meter.sample()

    assert set(sample.rails) == {"package-0", "package-0/core", "package-0/dram"}
    # core is inside package-0, so it is a rail but not summed
    assert sample.energy_j == pytest.approx(2.5)
    assert sample.watts == pytest.approx(sample.rails["package-0"] + sample.rails["package-0/dram"])
    assert sample.rails["package-0"] / sample.rails["package-0/dram"] == pytest.approx(4.0)
    assert sample.rails["package-0/core"] / sample.rails["package-0/dram"] == pytest.approx(1.6)
    assert "package-0 + package-0/dram" in meter.describe().what


def test_watts_are_energy_over_time_between_samples(rapl_tree):
    meter = RaplMeter(root=rapl_tree.root)
    first = meter.sample()
    rapl_tree.set(package_0=5_000_000, dram=1_000_000)
    time.sleep(0.05)
    second = meter.sample()
    assert second.energy_j - first.energy_j == pytest.approx(6.0)
    assert second.watts == pytest.approx(6.0 / (second.t - first.t))


def test_counter_wrap_around_between_two_readings(rapl_tree):
    rapl_tree.set(package_0=rapl_tree.max_uj - 1_000_000, dram=0)
    meter = RaplMeter(root=rapl_tree.root, zones=["package-0"])
    rapl_tree.set(package_0=500_000)  # wrapped: 1.0 J up to the top, 0.5 J after it
    sample = meter.sample()
    assert sample.energy_j == pytest.approx(1.5)
    assert sample.watts > 0
    rapl_tree.set(package_0=2_500_000)  # and the cumulative energy keeps counting on
    assert meter.sample().energy_j == pytest.approx(3.5)


def test_unwrap_delta():
    assert unwrap_delta(10, 30, 100) == 20
    assert unwrap_delta(90, 5, 100) == 15


def test_zone_selection_by_bare_name_and_unknown_zone(rapl_tree):
    meter = RaplMeter(root=rapl_tree.root, zones=["dram"])
    rapl_tree.set(package_0=9_000_000, dram=2_000_000)
    assert meter.sample().energy_j == pytest.approx(2.0)
    with pytest.raises(GreenpipeError, match=r"no zone 'psys'.*package-0, package-0/core, package-0/dram"):
        RaplMeter(root=rapl_tree.root, zones=["psys"])


def test_root_only_counter_says_how_to_grant_access(rapl_tree):
    def reader(path):
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    with pytest.raises(GreenpipeError, match="readable by root only") as err:
        RaplMeter(root=rapl_tree.root, reader=reader)
    assert f"sudo chmod a+r {rapl_tree.root}/intel-rapl:*/energy_uj" in str(err.value)
    assert "udev" in str(err.value)


def test_root_only_counter_on_the_real_filesystem(rapl_tree):
    path = rapl_tree.path("package-0")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not block reads; "
                        "the injected-PermissionError test covers the message")
        with pytest.raises(GreenpipeError, match="readable by root only"):
            RaplMeter(root=rapl_tree.root)
    finally:
        path.chmod(0o644)


def test_no_powercap_is_a_toolchain_message(tmp_path):
    with pytest.raises(ToolchainMissing, match="modprobe intel_rapl_msr"):
        RaplMeter(root=tmp_path / "no-such-powercap")
    (tmp_path / "powercap").mkdir()
    with pytest.raises(ToolchainMissing, match="no intel-rapl zone"):
        RaplMeter(root=tmp_path / "powercap")
