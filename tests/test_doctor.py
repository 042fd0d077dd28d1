"""`greenpipe doctor`: the tool status table comes from the adapters' declarations, and docs/tools.md is it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from greenpipe import doctor, tooling
from greenpipe.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tools.md"
runner = CliRunner()


def test_committed_docs_table_is_the_generated_one():
    committed = doctor.docs_table(DOCS.read_text())
    generated = doctor.markdown()
    assert committed == generated, (
        "docs/tools.md differs from `greenpipe doctor --markdown`: regenerate the table between its markers"
    )


def test_cli_markdown_prints_the_library_table():
    result = runner.invoke(app, ["doctor", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.output == doctor.markdown()


def test_every_registered_entry_declares_its_tools_and_each_tool_is_once():
    from greenpipe.compile import TARGETS
    from greenpipe.power import METERS
    from greenpipe.quant import VARIANTS
    from greenpipe.runtime import RUNTIMES

    entries = doctor.registered()
    names = {(e.kind, e.name) for e in entries}
    expected = (
        {("variant", n) for n in VARIANTS} | {("compile format", n) for n in TARGETS}
        | {("runtime", n) for n in RUNTIMES} | {("meter", n) for n in METERS}
        | {(doctor.CONTAINER, "vitis-bundle")}
    )
    assert names == expected
    assert all(e.tools for e in entries), [e.name for e in entries if not e.tools]
    rows = doctor.tool_rows(entries)
    assert len({r.tool.name for r in rows}) == len(rows)
    # The adapters that never met their tool are the Vitis AI ones, CUDA and NVML; nothing says more.
    never = {r.tool.name for r in rows if r.tool.evidence == "never"}
    assert never == {"vai_q_pytorch (pytorch_nndct)", "vai_q_tensorflow + vai_c_tensorflow", "vai_c_xir",
                     "vai_q_tensorflow2 + vai_c_tensorflow2", "CUDA runtime (PyTorch CUDA build)",
                     "NVML (nvidia-ml-py)"}
    # The container bundle's tools run in the Vitis AI container: never counted as usable (or not) here.
    report = doctor.examine(entries)
    assert all("vitis-bundle" not in names for names in (*report.usable.values(), *report.unusable.values()))


def test_a_tool_declared_twice_differently_is_refused():
    a = tooling.Tool("X", "real", "t", "p", lambda: tooling.Found(True, "1"))
    b = tooling.Tool("X", "never", "t", "p", lambda: tooling.Found(True, "1"))
    entries = [doctor.Entry("meter", "m1", "mod1", (a,)), doctor.Entry("meter", "m2", "mod2", (b,))]
    with pytest.raises(ValueError, match="'X' is declared twice, differently \\(mod2\\)"):
        doctor.tool_rows(entries)
    with pytest.raises(ValueError, match="bad"):
        tooling.Tool("Y", "bad", "t", "p", lambda: tooling.Found(True, ""))  # type: ignore[arg-type]


def test_an_entry_is_usable_only_when_every_tool_it_needs_is_present():
    here = tooling.Tool("here", "real", "t", "p", lambda: tooling.Found(True, "1.0"))
    gone = tooling.Tool("gone", "never", "t", "p", lambda: tooling.Found(False, "not on PATH"))
    entries = [doctor.Entry("runtime", "a", "m", (here,)), doctor.Entry("runtime", "b", "m", (here, gone))]
    report = doctor.examine(entries)
    assert report.usable["runtime"] == ["a"] and report.unusable["runtime"] == ["b"]
    assert [(r.tool.name, f.present) for r, f in report.tools] == [("here", True), ("gone", False)]


def test_probes_report_this_machine():
    assert tooling.module("numpy", "numpy")().present
    missing = tooling.module("no_such_module_greenpipe")()
    assert not missing.present and "no_such_module_greenpipe not importable" in missing.detail
    assert not tooling.command(["no-such-command-greenpipe", "--version"])().present
    assert tooling.command(["python3", "--version"])().detail.startswith("Python 3")
    assert tooling.any_of(tooling.module("no_such_module_greenpipe"), tooling.module("numpy"))().present


def test_doctor_on_this_machine_lists_what_is_usable():
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    usable = doctor.examine().usable
    assert "fp32" in usable["variant"] and "ort" in usable["runtime"]  # torch and onnxruntime are dependencies
    vitis = importlib.util.find_spec("pytorch_nndct") is not None
    assert ("vitis_ptq" in usable["variant"]) == vitis
    line = next(line for line in result.output.splitlines() if line.startswith("variants usable here:"))
    assert line.startswith(f"variants usable here: {', '.join(usable['variant'])};")
