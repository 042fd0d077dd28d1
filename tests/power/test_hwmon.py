import pytest

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.power.hwmon import HwmonMeter, discover


def test_discovers_ina_rails_and_their_labels(hwmon_tree):
    rails = discover(hwmon_tree.root)
    # label file, device-tree label, and chip@i2c-device for the unlabelled duplicate; coretemp ignored
    assert [r.label for r in rails] == ["ina226-u79", "ina226-u81", "ina226@3-0040"]
    assert [r.has_power for r in rails] == [True, True, False]


def test_sum_of_all_rails_uses_power_or_volts_times_amps(hwmon_tree):
    sample = HwmonMeter(root=hwmon_tree.root).sample()
    # hwmon1 has power1_input (1.25 W), which wins over its in1 x curr1 (1.2495 W)
    assert sample.rails == pytest.approx({"ina226-u79": 2.5, "ina226-u81": 1.25, "ina226@3-0040": 6.0})
    assert sample.watts == pytest.approx(9.75)


def test_selection_by_label_follows_the_files(hwmon_tree):
    meter = HwmonMeter(root=hwmon_tree.root, rails=["ina226-u79", "ina226@3-0040"])
    assert meter.sample().watts == pytest.approx(8.5)
    hwmon_tree.write("hwmon2", curr1_input=1000)  # the load doubles on that rail
    assert meter.sample().watts == pytest.approx(14.5)
    assert HwmonMeter(root=hwmon_tree.root, rails="hwmon1").sample().watts == pytest.approx(1.25)
    info = meter.describe()
    assert info.scope == "board-rail" and "ina226-u79, ina226@3-0040" in info.what
    assert "update_interval 35 ms" in info.resolution


def test_unknown_label_lists_the_available_ones(hwmon_tree):
    with pytest.raises(GreenpipeError) as err:
        HwmonMeter(root=hwmon_tree.root, rails=["vccint"])
    assert "no rail 'vccint'" in str(err.value)
    assert "available rails: ina226-u79, ina226-u81, ina226@3-0040" in str(err.value)


def test_a_rail_that_stops_reading_makes_the_sum_unknown(hwmon_tree):
    meter = HwmonMeter(root=hwmon_tree.root)
    hwmon_tree.write("hwmon0", power1_input="")  # what a torn read looks like to int()
    sample = meter.sample()
    assert sample.watts is None
    assert set(sample.rails) == {"ina226-u81", "ina226@3-0040"}


def test_no_shunt_monitor_is_a_toolchain_message(tmp_path):
    with pytest.raises(ToolchainMissing, match="modprobe ina2xx"):
        HwmonMeter(root=tmp_path)
