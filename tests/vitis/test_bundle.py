"""The Vitis AI container bundle: written whole, its model is greenpipe's float model on a bare torch or
TensorFlow, its calibration data is the dump's, and its script runs its check here and names what is missing.

The quantize / compile steps of the script need AMD's containers; they are not run here (docs/tools.md).
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
NEEDS = {"torch": "'pytorch_nndct'", "keras": "'tensorflow_model_optimization"}  # the module the script names
IMAGES = {"torch": "xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306",
          "keras": "xilinx/vitis-ai-tensorflow2-cpu:ubuntu2004-3.5.0.300"}


def _segment_checkpoint(model_dir: Path) -> Path:
    from greenpipe.recipes.segment.models import HRNET_PRESETS, build

    args = {"arch": "hrnet", "num_classes": 5, "preset": "tiny", **HRNET_PRESETS["tiny"]}
    torch.manual_seed(1)
    model = build(args)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"recipe": "segment", "model_args": args, "state_dict": model.state_dict()}, model_dir / "checkpoint.pt")
    return model_dir / "checkpoint.pt"


def _video_checkpoint_and_dump(root: Path) -> tuple[Path, Path]:
    """A tiny offline TSM ResNet (5 kernels) saved as the video recipe saves it, and its real calibration dump
    (every kernel input over two clips of camera motion over a built-in photograph)."""
    from greenpipe.calib import dump_calibration
    from greenpipe.models.tsm_tf import save_checkpoint
    from greenpipe.video.calib import calibration
    from tests.video.conftest import real_clip, tiny_offline

    net = tiny_offline(seed=3)
    (root / "tsm").mkdir(parents=True)
    save_checkpoint(root / "tsm" / "checkpoint.npz", net)
    clips = np.stack([real_clip(label, 4, seed=i) for i, label in enumerate(("pan_right", "zoom_out"))])
    dump_calibration(calibration(net, clips, ["a", "b"]), root / "video-calib")
    return root / "tsm" / "checkpoint.npz", root / "video-calib"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vitis")
    prepared = make_prepared(root / "prepared", size=48)
    return root, prepared, make_calib(root / "calib", prepared, count=5, crop=32)


@pytest.fixture(scope="module", params=["denoise", "segment-hrnet", "video-tsm"])
def bundle(request, data):
    root, _, calib = data
    if request.param == "denoise":
        checkpoint = make_checkpoint(root / "denoise")
    elif request.param == "segment-hrnet":
        checkpoint = _segment_checkpoint(root / "segment")
    else:
        checkpoint, calib = _video_checkpoint_and_dump(root / "video")
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

    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "bundle.json")
    assert sorted(manifest["sha256"]) == written
    assert all(manifest["sha256"][name] == files_sha256([out / name]) for name in written)
    assert set(FILES.values()) <= set(written)
    assert json.loads((out / "bundle.json").read_text()) == json.loads(json.dumps(manifest))
    assert manifest["dpu_target"] == "DPUCZDX8G_ISA1_B4096"
    assert (out / "vai_quantize.py").read_bytes() == (ROOT / "greenpipe/vitis/vai_quantize.py").read_bytes()
    if manifest["framework"] == "torch":
        assert manifest["input_shape"] == ([1, 3, 64, 64] if manifest["recipe"] == "denoise" else [1, 3, 64, 128])
    else:
        assert [k["name"] for k in manifest["kernels"]] == ["k00", "k01", "k02", "k03", "k04"]


TORCH_RUN = """import sys, numpy as np, torch
sys.path.insert(0, '.')
import model
m = model.load('weights.npz')
x = np.load(sys.argv[1])
with torch.no_grad():
    y = {k: m(torch.from_numpy(x[k])).numpy() for k in x.files}
np.savez(sys.argv[2], **y)
assert not any(n == 'greenpipe' or n.startswith('greenpipe.') for n in sys.modules), 'greenpipe imported'
"""
KERAS_RUN = """import sys, numpy as np, tensorflow as tf
sys.path.insert(0, '.')
import model
kernels = model.load('weights.npz')
x = np.load(sys.argv[1])
y = {}
for name, m in kernels.items():
    xs = [x[k] for k in sorted(x.files) if k.startswith(name + '/')]
    y[name] = np.asarray(m(xs if len(xs) > 1 else xs[0], training=False))
np.savez(sys.argv[2], **y)
assert not any(n == 'greenpipe' or n.startswith('greenpipe.') for n in sys.modules), 'greenpipe imported'
"""


def test_bundled_model_in_a_fresh_process_without_greenpipe_gives_the_float_models_outputs(bundle, tmp_path):
    checkpoint, _, out, manifest = bundle
    gen = np.random.default_rng(5)
    if manifest["framework"] == "torch":
        inputs = {"a": gen.random((1, 3, 64, 64), np.float32), "b": gen.random((2, 3, 32, 96), np.float32)}
        float_model, _ = model_from_checkpoint(checkpoint)
        with torch.no_grad():
            expected = {k: float_model(torch.from_numpy(x)).numpy() for k, x in inputs.items()}
    else:
        from greenpipe.models.tsm_tf import load_checkpoint, split_models

        kernels, split = split_models(load_checkpoint(checkpoint)[0])
        inputs, expected = {}, {}
        for model, entry in zip(kernels, split["kernels"]):
            xs = [gen.random(i["shape"], np.float32) for i in entry["inputs"]]
            inputs.update({f"{entry['name']}/{n}": x for n, x in enumerate(xs)})
            expected[entry["name"]] = np.asarray(model(xs if len(xs) > 1 else xs[0], training=False))
    np.savez(tmp_path / "inputs.npz", **inputs)
    code = TORCH_RUN if manifest["framework"] == "torch" else KERAS_RUN
    proc = _fresh_python(code, out, str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "outputs.npz") as got:
        assert sorted(got.files) == sorted(expected)
        for k, y in expected.items():
            np.testing.assert_allclose(got[k], y, rtol=0, atol=1e-6)


def test_calibration_npz_holds_the_dump_sample_for_sample(bundle):
    _, calib, out, manifest = bundle
    assert manifest["calibration"]["boundaries"]
    for boundary in manifest["calibration"]["boundaries"]:
        dump = json.loads((calib / boundary / "manifest.json").read_text())
        bundled = json.loads((out / "calib" / boundary / "manifest.json").read_text())
        assert bundled["entries"] == dump["entries"] and bundled["sources"] == dump["sources"]
        assert manifest["calibration"]["samples"][boundary] == dump["count"] > 0
        with np.load(calib / boundary / "arrays.npz") as a, np.load(out / "calib" / boundary / "arrays.npz") as b:
            assert sorted(b.files) == sorted(a.files)
            for name in a.files:
                np.testing.assert_array_equal(b[name], a[name])
    with np.load(out / FILES["reference_file"]) as ref:
        for boundary in manifest["calibration"]["boundaries"]:
            with np.load(calib / boundary / "arrays.npz") as a:
                first = a[json.loads((calib / boundary / "manifest.json").read_text())["entries"][0]]
            if manifest["framework"] == "torch":  # (1, 3, 32, 32), reflect-padded to the deployed shape
                assert list(ref["input"].shape) == manifest["input_shape"]
                np.testing.assert_array_equal(ref["input"][..., :32, :32], first)
            else:  # each kernel input at its own shape
                kernel = boundary.split("_")[0]
                np.testing.assert_array_equal(ref[f"{kernel}/{boundary}"], first)


def test_script_and_model_file_compile_and_parse_as_python_3_8(bundle, tmp_path):
    _, _, out, _ = bundle
    for name in (FILES["script_file"], FILES["model_file"]):
        py_compile.compile(str(out / name), cfile=str(tmp_path / f"{name}.pyc"), doraise=True)
        ast.parse((out / name).read_text(), feature_version=(3, 8))  # the container's Python


def test_script_check_step_passes_here_with_the_framework_alone(bundle):
    _, _, out, manifest = bundle
    proc = _fresh_python("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                         out, str(out / "vai_quantize.py"), str(out), "--check")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "out-check" / "report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["check"] and report["container"] == IMAGES[manifest["framework"]]
    assert report["status"] == "passed" and report["mode"] == "check" and report["outputs"] == {}
    assert report["steps"][0]["max_abs_diff"] <= 1e-6
    parts = ["model"] if manifest["framework"] == "torch" else [k["name"] for k in manifest["kernels"]]
    assert sorted(report["steps"][0]["per_part"]) == sorted(parts)


@pytest.mark.skipif(any(importlib.util.find_spec(m) for m in ("pytorch_nndct", "tensorflow_model_optimization")),
                    reason="a Vitis AI quantizer is installed here: the script would run, not stop")
@pytest.mark.parametrize("mode", ["ptq", "fastft", "qat"])
def test_script_outside_the_container_stops_naming_the_missing_module(bundle, mode):
    _, _, out, manifest = bundle
    proc = subprocess.run([sys.executable, str(out / "vai_quantize.py"), str(out), "--mode", mode,
                           "--out", str(out / f"try-{mode}")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"needs the Python module {NEEDS[manifest['framework']]}" in proc.stderr
    assert IMAGES[manifest["framework"]] in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((out / f"try-{mode}" / "report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["check"]  # the check ran, nothing was quantized
    assert report["mode"] == mode and report["status"] == "failed" and NEEDS[manifest["framework"]] in report["error"]
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
    assert manifest["input_shape"] == [1, 3, 32, 32] and manifest["calibration"]["samples"] == {"input": 2}


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
    with pytest.raises(GreenpipeError, match="single-graph model calibrated at its input"):
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


def test_the_online_tsm_kernels_written_for_tf_keras_compute_what_greenpipe_s_kernels_compute(tmp_path):
    from greenpipe.models.tsm_tf import split_models
    from greenpipe.vitis.keras_source import kernels_source
    from tests.video.conftest import tiny_online

    kernels, split = split_models(tiny_online(seed=2))
    written = kernels_source(kernels, "the online TSM kernels")
    ast.parse(written.source, feature_version=(3, 8))
    (tmp_path / "model.py").write_text(written.source)
    np.savez(tmp_path / "weights.npz", **written.weights)
    spec = importlib.util.spec_from_file_location("written_kernels", tmp_path / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = module.load(str(tmp_path / "weights.npz"))
    assert list(rebuilt) == [k.name for k in kernels] and len(kernels) == 11
    gen = np.random.default_rng(0)
    for model, entry in zip(kernels, split["kernels"]):
        xs = [gen.random(i["shape"], np.float32) for i in entry["inputs"]]
        x = xs if len(xs) > 1 else xs[0]
        np.testing.assert_array_equal(np.asarray(rebuilt[entry["name"]](x, training=False)),
                                      np.asarray(model(x, training=False)))


def test_a_keras_layer_the_writer_does_not_know_is_named():
    import keras

    from greenpipe.vitis.keras_source import kernels_source

    x = keras.Input((8, 8, 3), batch_size=1, name="x")
    y = keras.layers.Conv2DTranspose(4, 3, name="up")(x)
    with pytest.raises(GreenpipeError, match=r"kernel k, layer up \(Conv2DTranspose\): Keras layer Conv2DTranspose "
                                             r"cannot be written for tf.keras yet"):
        kernels_source([keras.Model(x, y, name="k")], "test")


def test_a_video_checkpoint_with_another_models_dump_is_refused(data, tmp_path):
    root, _, calib = data
    checkpoint, _ = _video_checkpoint_and_dump(tmp_path / "v")
    with pytest.raises(GreenpipeError, match=r"boundaries \['input'\], but the kernels of .* take \['k00_input'"):
        write_bundle(checkpoint, calib, ARCH, tmp_path / "b", input_size=32)


def test_run_sh_mounts_the_bundle_in_the_image_of_its_framework(bundle, tmp_path):
    """docker replaced by a script that prints its arguments: what run.sh asks docker to run."""
    _, _, out, manifest = bundle
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "bin" / "docker").chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    for mode, option in (("qat", "--qat-steps"), ("fastft", "--ft-samples")):
        proc = subprocess.run(["bash", str(ROOT / "infra/vitis/run.sh"), str(out), mode, option, "5"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        argv = proc.stdout.splitlines()
        assert argv[:2] == ["run", "--rm"] and f"{out.resolve()}:/bundle" in argv
        assert IMAGES[manifest["framework"]] in argv
        env_name = "vitis-ai-pytorch" if manifest["framework"] == "torch" else "vitis-ai-tensorflow2"
        assert f"VAI_ENV={env_name}" in argv
        assert argv[-4:] == ["--mode", mode, option, "5"]
