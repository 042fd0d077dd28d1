"""The Vitis AI container bundle: written whole, its model is greenpipe's float model on a bare torch,
its calibration data is the dump's, and its script runs its check here and names what is missing.

The quantize / compile steps of the script need AMD's container; they are not run here (docs/tools.md).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import py_compile
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from greenpipe.errors import DataError, GreenpipeError
from greenpipe.recipes.base import model_from_checkpoint
from greenpipe.vitis.bundle import FILES, write_bundle
from greenpipe.vitis.torch_source import model_source
from tests.stage_fixtures import make_calib
from tests.workspace import make_checkpoint, make_prepared

ROOT = Path(__file__).resolve().parents[2]
ARCH = ROOT / "infra/arch/DPUCZDX8G/ZCU104/arch.json"


def _segment_checkpoint(model_dir: Path) -> Path:
    from greenpipe.recipes.segment.models import HRNET_PRESETS, build

    args = {"arch": "hrnet", "num_classes": 5, "preset": "tiny", **HRNET_PRESETS["tiny"]}
    torch.manual_seed(1)
    model = build(args)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"recipe": "segment", "model_args": args, "state_dict": model.state_dict()}, model_dir / "checkpoint.pt")
    return model_dir / "checkpoint.pt"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vitis")
    prepared = make_prepared(root / "prepared", size=48)
    return root, prepared, make_calib(root / "calib", prepared, count=5, crop=32)


@pytest.fixture(scope="module", params=["denoise", "segment-hrnet"])
def bundle(request, data):
    root, _, calib = data
    if request.param == "denoise":
        checkpoint = make_checkpoint(root / "denoise")
    else:
        checkpoint = _segment_checkpoint(root / "segment")
    out = root / f"bundle-{request.param}"
    manifest = write_bundle(checkpoint, calib, ARCH, out, input_size=64)
    return checkpoint, calib, out, manifest


def _fresh_python(code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter in isolated mode (no PYTHONPATH, no cwd on sys.path): greenpipe is not
    importable unless the code imports it from the repository on purpose."""
    return subprocess.run([sys.executable, "-I", "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def test_bundle_holds_every_file_with_its_digest(bundle):
    _, _, out, manifest = bundle
    from greenpipe.io import files_sha256

    for name in FILES.values():
        assert (out / name).is_file(), name
        assert manifest["sha256"][name] == files_sha256([out / name])
    assert json.loads((out / "bundle.json").read_text()) == json.loads(json.dumps(manifest))
    assert manifest["dpu_target"] == "DPUCZDX8G_ISA1_B4096"
    assert manifest["input_shape"] == ([1, 3, 64, 64] if manifest["recipe"] == "denoise" else [1, 3, 64, 128])
    assert (out / "vai_quantize.py").read_bytes() == (ROOT / "greenpipe/vitis/vai_quantize.py").read_bytes()


def test_bundled_model_in_a_fresh_torch_only_process_gives_the_float_models_outputs(bundle, tmp_path):
    checkpoint, _, out, _ = bundle
    gen = torch.Generator().manual_seed(5)
    inputs = {"a": torch.rand(1, 3, 64, 64, generator=gen), "b": torch.rand(2, 3, 32, 96, generator=gen)}
    np.savez(tmp_path / "inputs.npz", **{k: v.numpy() for k, v in inputs.items()})
    code = (
        "import sys, numpy as np, torch; sys.path.insert(0, '.'); import model\n"
        "m = model.load('weights.npz')\n"
        "x = np.load(sys.argv[1])\n"
        "with torch.no_grad(): y = {k: m(torch.from_numpy(x[k])).numpy() for k in x.files}\n"
        "np.savez(sys.argv[2], **y)\n"
        "assert not any(n == 'greenpipe' or n.startswith('greenpipe.') for n in sys.modules), 'greenpipe imported'\n"
    )
    proc = _fresh_python(code, out, str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz"))
    assert proc.returncode == 0, proc.stderr
    float_model, _ = model_from_checkpoint(checkpoint)
    with np.load(tmp_path / "outputs.npz") as got, torch.no_grad():
        for k, x in inputs.items():
            np.testing.assert_allclose(got[k], float_model(x).numpy(), rtol=0, atol=1e-6)


def test_calibration_npz_holds_the_dump_sample_for_sample(bundle):
    _, calib, out, manifest = bundle
    dump = json.loads((calib / "input" / "manifest.json").read_text())
    bundled = json.loads((out / FILES["calib_manifest"]).read_text())
    assert bundled["entries"] == dump["entries"] and bundled["sources"] == dump["sources"]
    assert manifest["calibration"]["samples"] == dump["count"] == 5
    with np.load(calib / "input" / "arrays.npz") as a, np.load(out / FILES["calib_archive"]) as b:
        assert sorted(b.files) == sorted(a.files)
        for name in a.files:
            np.testing.assert_array_equal(b[name], a[name])
    with np.load(out / FILES["reference_file"]) as ref, np.load(calib / "input" / "arrays.npz") as a:
        first = a[dump["entries"][0]]  # (1, 3, 32, 32), reflect-padded to the deployed shape
        assert list(ref["input"].shape) == manifest["input_shape"]
        np.testing.assert_array_equal(ref["input"][..., :32, :32], first)


def test_script_and_model_file_compile_and_parse_as_python_3_8(bundle, tmp_path):
    _, _, out, _ = bundle
    for name in (FILES["script_file"], FILES["model_file"]):
        py_compile.compile(str(out / name), cfile=str(tmp_path / f"{name}.pyc"), doraise=True)
        ast.parse((out / name).read_text(), feature_version=(3, 8))  # the container's Python


def test_script_check_step_passes_here_with_torch_alone(bundle):
    _, _, out, _ = bundle
    proc = _fresh_python("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                         out, str(out / "vai_quantize.py"), str(out), "--check")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "out-check" / "report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["check"]
    assert report["steps"][0]["max_abs_diff"] <= 1e-6 and report["steps"][0]["torch"] == torch.__version__


@pytest.mark.skipif(importlib.util.find_spec("pytorch_nndct") is not None,
                    reason="vai_q_pytorch is installed here: the script would run, not stop")
@pytest.mark.parametrize("mode", ["ptq", "qat"])
def test_script_outside_the_container_stops_naming_the_missing_module(bundle, mode):
    _, _, out, _ = bundle
    proc = subprocess.run([sys.executable, str(out / "vai_quantize.py"), str(out), "--mode", mode,
                           "--out", str(out / f"try-{mode}")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "needs the Python module 'pytorch_nndct'" in proc.stderr
    assert "xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((out / f"try-{mode}" / "report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["check"]  # the check ran, nothing was quantized
    assert not (out / f"try-{mode}" / "quantized").exists()


def test_cli_writes_a_bundle(data, tmp_path):
    from typer.testing import CliRunner

    from greenpipe.cli import app

    root, _, calib = data
    checkpoint = make_checkpoint(tmp_path / "model")
    result = CliRunner().invoke(app, ["vitis-bundle", str(checkpoint), str(calib), "--arch", str(ARCH),
                                      "--out", str(tmp_path / "b"), "--input-size", "32", "--samples", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert manifest["input_shape"] == [1, 3, 32, 32] and manifest["calibration"]["samples"] == 2


def test_a_failed_write_keeps_the_earlier_bundle(data, tmp_path):
    from tests.test_calib_dump import _dump_with_non_finite

    root, _, calib = data
    checkpoint = make_checkpoint(tmp_path / "model")
    write_bundle(checkpoint, calib, ARCH, tmp_path / "b", input_size=32)
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    bad = _dump_with_non_finite(tmp_path / "bad")
    with pytest.raises(DataError, match="non-finite"):
        write_bundle(checkpoint, bad, ARCH, tmp_path / "b", input_size=32)
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()} == before


def test_bad_arch_file_and_multi_boundary_dump_are_named(data, tmp_path):
    from greenpipe.calib import BoundaryWriter, write_index

    root, _, calib = data
    checkpoint = make_checkpoint(tmp_path / "model")
    (tmp_path / "arch.json").write_text('{"fingerprint": "0x1"}')
    with pytest.raises(GreenpipeError, match=r"arch.json: names no DPU target"):
        write_bundle(checkpoint, calib, tmp_path / "arch.json", tmp_path / "b", input_size=32)
    two = tmp_path / "two"
    for name in ("k00_shift", "k01_shift"):
        w = BoundaryWriter(two, name)
        w.add(np.zeros((1, 3, 8, 8), np.float32), "s")
        w.close()
    write_index(two, ["k00_shift", "k01_shift"])
    with pytest.raises(GreenpipeError, match="single-graph PyTorch model calibrated at its input"):
        write_bundle(checkpoint, two, ARCH, tmp_path / "b", input_size=32)
    assert not (tmp_path / "b").exists()


def test_a_layer_the_writer_does_not_know_is_named():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(GreenpipeError, match=r"torch.nn.modules.batchnorm.BatchNorm2d cannot be written"):
        model_source(model, "test")


def test_run_sh_refuses_what_is_not_a_bundle(tmp_path):
    script = ROOT / "infra/vitis/run.sh"
    usage = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    proc = subprocess.run(["bash", str(script), str(tmp_path), "ptq"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{tmp_path} is not a Vitis bundle" in proc.stderr
