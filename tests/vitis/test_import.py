"""``greenpipe vitis-import``: a container run's xmodel is taken back only once checked, into the compile layout.

The Vitis AI container cannot run here, so each test makes its run the way the container would: the
bundle's own script (:func:`greenpipe.vitis.vai_quantize.main`, the code the bundle carries) runs its
real check step, report and compile step here. Two parts only AMD's tools can do are stood in for,
and only to produce files: the quantizer step (``torch_quantize``: it records the steps
``torch_ptq`` / ``torch_qat`` record and writes bytes where vai_q_pytorch writes ``<Model>_int.xmodel``)
and ``vai_c_xir`` (a script on PATH that writes bytes where the compiler writes ``model.xmodel``).
Those bytes are no DPU program: nothing here runs one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from greenpipe.deploy import artifact_bytes, compiled_artifact, deploy_job
from greenpipe.errors import GreenpipeError
from greenpipe.vitis import vai_quantize
from greenpipe.vitis.bundle import write_bundle
from greenpipe.vitis.results import import_results
from tests.data.fixtures import make_params
from tests.stage_fixtures import make_calib
from tests.workspace import make_checkpoint, make_prepared

ROOT = Path(__file__).resolve().parents[2]
ARCH = ROOT / "infra/arch/DPUCZDX8G/ZCU104/arch.json"
VCK5000 = ROOT / "infra/arch/DPUCVDX8H/VCK50008PE/arch.json"
STAND_IN_COMPILER = """#!/bin/sh
# Stands in for vai_c_xir: writes $XMODEL_BYTES bytes where the compiler writes its DPU program.
while [ $# -gt 0 ]; do
  case "$1" in -o) o="$2"; shift ;; -n) n="$2"; shift ;; esac
  shift
done
mkdir -p "$o"
head -c "${XMODEL_BYTES:-4096}" /dev/zero | tr '\\0' 'x' > "$o/$n.xmodel"
echo "stand-in vai_c_xir for $n"
exit "${XIR_EXIT:-0}"
"""


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A denoise bundle as `greenpipe vitis-bundle` writes it."""
    root = tmp_path_factory.mktemp("vitis-import")
    prepared = make_prepared(root / "prepared", size=48)
    calib = make_calib(root / "calib", prepared, count=3, crop=32)
    write_bundle(make_checkpoint(root / "model"), calib, ARCH, root / "bundle", input_size=32)
    return root / "bundle"


@pytest.fixture
def bundle(written, tmp_path, monkeypatch):
    """A copy of the bundle to run on, with the stand-in compiler on PATH."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "vai_c_xir").write_text(STAND_IN_COMPILER)
    (tmp_path / "bin" / "vai_c_xir").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    return Path(shutil.copytree(written, tmp_path / "bundle"))


def _stand_in_quantizer(model, reference, args, bundle, manifest, out, report):
    """The steps torch_ptq (ptq, fastft) and torch_qat record, and bytes where vai_q_pytorch writes its xmodel."""
    steps = {"ptq": ["calibrate"], "fastft": ["fast_finetune", "calibrate"], "qat": ["qat_train"]}[args.mode]
    for step in steps:
        report.step(step, samples=2)
    (out / "quantized").mkdir(parents=True)
    (out / "quantized" / f"{manifest['model_class']}_int.xmodel").write_bytes(b"quantized xmodel stand-in")
    report.step("export_xmodel", input_shape=manifest["input_shape"], output_dir=str(out / "quantized"))


def run_container(bundle: Path, mode: str, monkeypatch) -> int:
    """What `infra/vitis/run.sh BUNDLE MODE` runs, here: the bundle's script, quantizer and compiler stood in for."""
    monkeypatch.setattr(vai_quantize, "torch_quantize", _stand_in_quantizer)
    return vai_quantize.main([str(bundle), "--mode", mode])


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def earlier(tmp_path) -> Path:
    """An earlier output a rejected import must leave as it was."""
    out = tmp_path / "compile" / "vitis_ptq" / "zcu104"
    out.mkdir(parents=True)
    (out / "model.xmodel").write_bytes(b"an earlier xmodel")
    (out / "compile_report.json").write_text('{"artifact": "model.xmodel"}\n')
    return out


def refused(bundle: Path, mode: str, out: Path, match: str, **options) -> str:
    before = snapshot(out)
    with pytest.raises(GreenpipeError, match=match) as err:
        import_results(bundle, mode, out, **options)
    assert snapshot(out) == before
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary directory left beside it
    return str(err.value)


@pytest.mark.parametrize("mode", ["ptq", "fastft", "qat"])
def test_a_passed_run_imports_into_the_layout_deploy_reads(bundle, mode, earlier, monkeypatch):
    assert run_container(bundle, mode, monkeypatch) == 0
    report = json.loads((bundle / f"out-{mode}" / "report.json").read_text())
    assert report["status"] == "passed" and report["mode"] == mode
    assert sorted(report["outputs"]) == ["compiled/model.xmodel", "vai_c_xir_model.log"]

    out = earlier.parent.parent / f"vitis_{mode}" / "zcu104"
    metrics = import_results(bundle, mode, out, arch=ARCH)
    assert sorted(p.name for p in out.iterdir()) == ["compile_report.json", "model.xmodel", "vai_c_xir.log",
                                                      "vitis_report.json"]
    compiled, artifact = compiled_artifact(out.parent, f"vitis_{mode}", "zcu104")
    assert artifact == out / "model.xmodel"
    assert artifact.read_bytes() == (bundle / f"out-{mode}" / "compiled" / "model.xmodel").read_bytes()
    assert compiled["format"] == "xmodel" and compiled["dpu_target"] == "DPUCZDX8G_ISA1_B4096"
    assert compiled["variant"] == f"vitis_{mode}" and compiled["target"] == "zcu104" and compiled["dpu_numerics"]
    assert "xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306" in compiled["source"]
    assert "not produced here" in compiled["source"] and compiled["source"] == metrics["source"]
    assert compiled["container"]["check_max_abs_diff"] <= vai_quantize.CHECK_TOLERANCE

    params = make_params(
        compile={"targets": {"zcu104": {"format": "xmodel", "arch": str(ARCH)}}},
        deploy={"input_size": 32, "devices": {"zcu": {"kind": "zcu104", "target": "zcu104", "runtime": "vart"}}})
    job = deploy_job(params, f"vitis_{mode}", "zcu", compiled, artifact)
    assert job.runtime == "vart" and job.recipe == "denoise" and job.input_shape == compiled["input_shape"]
    assert job.artifact_bytes == artifact_bytes(artifact) == 4096


def test_no_report_is_refused(bundle, earlier, monkeypatch):
    assert run_container(bundle, "ptq", monkeypatch) == 0
    (bundle / "out-ptq" / "report.json").unlink()
    msg = refused(bundle, "ptq", earlier, r"out-ptq/report.json: missing")
    assert f"rerun `infra/vitis/run.sh {bundle} ptq`" in msg
    refused(bundle, "qat", earlier, r"out-qat/report.json: missing")  # a mode that never ran


def test_a_failed_step_is_refused_naming_it(bundle, earlier, monkeypatch):
    monkeypatch.setenv("XIR_EXIT", "3")
    assert run_container(bundle, "ptq", monkeypatch) == 2
    report = json.loads((bundle / "out-ptq" / "report.json").read_text())
    assert report["status"] == "failed" and "vai_c_xir failed (exit 3)" in report["error"]
    refused(bundle, "ptq", earlier, r"did not pass \(status 'failed', last step recorded: compile model\): "
                                    r"vai_c_xir failed \(exit 3\)")


def test_a_run_that_stopped_without_a_status_is_refused(bundle, earlier, monkeypatch):
    """A killed container: the report as the script leaves it after its last finished step."""
    assert run_container(bundle, "ptq", monkeypatch) == 0
    path = bundle / "out-ptq" / "report.json"
    report = json.loads(path.read_text())
    path.write_text(json.dumps({**report, "status": "running", "steps": report["steps"][:2]}))
    refused(bundle, "ptq", earlier, r"status 'running', last step recorded: calibrate\): it stopped without saying")


@pytest.mark.parametrize("damage", ["missing", "empty", "changed"])
def test_a_missing_empty_or_changed_xmodel_is_refused(bundle, earlier, damage, monkeypatch):
    assert run_container(bundle, "ptq", monkeypatch) == 0
    xmodel = bundle / "out-ptq" / "compiled" / "model.xmodel"
    if damage == "missing":
        xmodel.unlink()
    elif damage == "empty":
        xmodel.write_bytes(b"")
    else:
        xmodel.write_bytes(b"y" * 4096)  # same size, other bytes
    expected = {"missing": "missing", "empty": "empty", "changed": "size or sha256 differs"}[damage]
    refused(bundle, "ptq", earlier, rf"compiled/model.xmodel: {expected}")


def test_an_xmodel_the_compiler_wrote_empty_is_refused(bundle, earlier, monkeypatch):
    monkeypatch.setenv("XMODEL_BYTES", "0")
    assert run_container(bundle, "ptq", monkeypatch) == 0  # the script records what it found
    refused(bundle, "ptq", earlier, r"compiled/model.xmodel: empty")


def test_an_oversize_xmodel_is_refused(bundle, earlier, monkeypatch):
    assert run_container(bundle, "ptq", monkeypatch) == 0
    refused(bundle, "ptq", earlier, r"model.xmodel: 4096 bytes, over the 1000-byte cap", max_bytes=1000)


def test_an_oversize_report_is_refused(bundle, earlier, monkeypatch):
    assert run_container(bundle, "ptq", monkeypatch) == 0
    monkeypatch.setattr("greenpipe.vitis.results.MAX_TEXT_BYTES", 100)
    refused(bundle, "ptq", earlier, r"report.json: \d+ bytes, over the 100-byte cap")


def test_an_arch_mismatch_is_refused(bundle, earlier, monkeypatch):
    assert run_container(bundle, "ptq", monkeypatch) == 0
    msg = refused(bundle, "ptq", earlier, r"DPU target DPUCVDX8H_ISA1_F2W2_8PE, but the bundle was compiled for "
                                          r"DPUCZDX8G_ISA1_B4096", arch=VCK5000)
    assert "runs only on the DPU it was compiled for" in msg
    shutil.copyfile(VCK5000, bundle / "arch.json")  # the bundle's own arch file swapped after it was written
    refused(bundle, "ptq", earlier, r"arch.json: changed since `greenpipe vitis-bundle` wrote the bundle")


def test_a_report_of_another_bundle_or_mode_is_refused(bundle, earlier, monkeypatch):
    assert run_container(bundle, "ptq", monkeypatch) == 0
    shutil.copytree(bundle / "out-ptq", bundle / "out-qat")
    refused(bundle, "qat", earlier, r"out-qat/report.json: a 'ptq' run, not 'qat'")
    path = bundle / "out-ptq" / "report.json"
    report = json.loads(path.read_text())
    path.write_text(json.dumps({**report, "bundle": {**report["bundle"], "dpu_target": "DPUCVDX8H_ISA1_F2W2_8PE"}}))
    refused(bundle, "ptq", earlier, r"written for another bundle.json than the one beside it")


def test_a_check_step_out_of_tolerance_is_refused(bundle, earlier, monkeypatch):
    """The script stops before quantizing when its check fails; a report saying otherwise was altered."""
    assert run_container(bundle, "ptq", monkeypatch) == 0
    path = bundle / "out-ptq" / "report.json"
    report = json.loads(path.read_text())
    report["steps"][0]["max_abs_diff"] = 0.5
    path.write_text(json.dumps(report))
    refused(bundle, "ptq", earlier, r"check step's max \|bundled - greenpipe\| is 0.5 \(tolerance 0.0001\)")


def test_cli_imports_and_refuses_with_exit_status_2(bundle, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from greenpipe.cli import app

    assert run_container(bundle, "fastft", monkeypatch) == 0
    out = tmp_path / "compile" / "vitis_fastft" / "zcu104"
    ok = CliRunner().invoke(app, ["vitis-import", str(bundle), "fastft", "--out", str(out), "--arch", str(ARCH)])
    assert ok.exit_code == 0, ok.output
    assert "vitis_fastft for zcu104 (DPUCZDX8G_ISA1_B4096" in " ".join(ok.output.split())
    bad = CliRunner().invoke(app, ["vitis-import", str(bundle), "qat", "--out", str(out)])
    assert bad.exit_code == 2 and "out-qat/report.json:missing;rerun" in "".join(bad.output.split())  # rich wraps
    assert (out / "model.xmodel").exists()
