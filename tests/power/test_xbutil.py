import json
import shutil

import pytest

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.power.xbutil import XbutilMeter, build_command, parse_electrical, read_report


def rail(id_, description, volts, amps, v_present="true", a_present="true"):
    return {"id": id_, "description": description,
            "voltage": {"volts": volts, "is_present": v_present},
            "current": {"amps": amps, "is_present": a_present}}


ELECTRICAL = {
    "power_rails": [
        rail("12v_pex", "12 Volts PCI Express", "12.133", "1.912"),
        rail("12v_aux", "12 Volts Auxillary", "12.101", "N/A"),
        rail("vccint", "Internal FPGA Vcc", "0.800", "21.500"),
        rail("3v3_aux", "3.3 Volts Auxillary", "0.000", "0.000", "false", "false"),
        {"id": "vcc_ram", "description": "Vcc Ram", "voltage": {"volts": "0.850", "is_present": "true"}},
    ],
    "power_consumption_max_watts": "225",
    "power_consumption_watts": "41.070",
    "power_consumption_warning": "false",
}

REPORT = {
    "schema_version": {"schema": "JSON", "creation_date": "Tue Mar  4 10:00:00 2025 GMT"},
    "devices": [{"interface_type": "pcie", "device_id": "0000:65:00.1", "electrical": ELECTRICAL}],
}


def test_parses_card_power_and_rails_with_numbers_only():
    watts, rails = parse_electrical(REPORT)
    assert watts == pytest.approx(41.07)
    # 12v_aux has no current (N/A), 3v3_aux is absent, vcc_ram has no current at all
    assert rails == pytest.approx({"12v_pex": 12.133 * 1.912, "vccint": 0.8 * 21.5})


@pytest.mark.parametrize("na", ["N/A", "NA", ""])
def test_power_na_is_none(na):
    doc = json.loads(json.dumps(REPORT))
    doc["devices"][0]["electrical"]["power_consumption_watts"] = na
    watts, rails = parse_electrical(doc)
    assert watts is None
    assert "12v_pex" in rails


def test_bare_electrical_object_as_pyxrt_returns_it():
    assert parse_electrical(ELECTRICAL) == parse_electrical(REPORT)
    assert parse_electrical({"electrical": ELECTRICAL}) == parse_electrical(REPORT)
    assert parse_electrical({}) == (None, {})  # no xclbin loaded: empty report


def test_report_with_no_device_says_so():
    with pytest.raises(GreenpipeError, match="lists no device"):
        parse_electrical({"devices": []})


def test_read_report_from_the_file_xbutil_writes(tmp_path):
    path = tmp_path / "electrical.json"
    path.write_text(json.dumps(REPORT, indent=4))
    assert read_report(path) == parse_electrical(REPORT)
    path.write_text("{not json")
    with pytest.raises(GreenpipeError, match="could not be read as JSON"):
        read_report(path)


def test_command_line():
    assert build_command("xbutil", "0000:65:00.1", "/tmp/e.json") == [
        "xbutil", "examine", "-d", "0000:65:00.1", "-r", "electrical", "--format", "JSON",
        "-o", "/tmp/e.json"]
    assert "-d" not in build_command("xbutil", None, "/tmp/e.json")


def test_missing_xbutil_names_xrt():
    with pytest.raises(ToolchainMissing, match=r"not found on PATH.*setup\.sh"):
        XbutilMeter(command="xbutil-not-installed-here", backend="xbutil")


@pytest.mark.skipif(shutil.which("false") is None, reason="needs the `false` command")
def test_failing_xbutil_reports_exit_status_and_fix():
    with pytest.raises(GreenpipeError, match=r"failed \(exit 1\).*pass bdf="):
        XbutilMeter(command="false", backend="xbutil", bdf="0000:65:00.1")


def test_pyxrt_backend_missing_says_so():
    try:
        import pyxrt  # noqa: F401
    except ImportError:
        with pytest.raises(ToolchainMissing, match="pyxrt is not importable"):
            XbutilMeter(backend="pyxrt")
    else:
        pytest.skip("pyxrt is installed here")


def test_bad_backend():
    with pytest.raises(GreenpipeError, match="backend 'xrt'"):
        XbutilMeter(backend="xrt")


def _xrt_here() -> bool:
    try:
        import pyxrt  # noqa: F401
    except ImportError:
        return shutil.which("xbutil") is not None
    return True


@pytest.mark.board
@pytest.mark.skipif(not _xrt_here(), reason="needs an XRT card host (xbutil or pyxrt)")
def test_real_card_answers():
    meter = XbutilMeter()
    sample = meter.sample()
    assert sample.watts is None or sample.watts > 0
    assert sample.rails
