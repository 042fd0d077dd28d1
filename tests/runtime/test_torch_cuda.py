"""torch_cuda runtime: the artifact's weights in the recipe's model, the missing-CUDA message, and (GPU) agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.quant.export import export_onnx
from greenpipe.runtime import load
from greenpipe.runtime.torch_cuda import float_model_from_artifact, missing_cuda_message
from tests.stage_fixtures import calib_batches, tiny_unet
from tests.workspace import TINY_MODEL_ARGS


def float_artifact(root: Path, seed: int = 0) -> Path:
    """A compiled fp32 directory: model.onnx (tiny UNet) and the compile report fields the runtime reads."""
    path = export_onnx(tiny_unet(seed), calib_batches(1, size=16)[0], root)
    (root / "compile_report.json").write_text(
        json.dumps(
            {
                "variant": "fp32",
                "artifact": path.name,
                "recipe": "denoise",
                "model_args": TINY_MODEL_ARGS,
                "dpu_numerics": False,
            }
        )
    )
    return path


def test_model_rebuilt_from_the_artifact_computes_what_ort_computes(tmp_path):
    path = float_artifact(tmp_path, seed=3)
    model, report = float_model_from_artifact(path)
    assert report["recipe"] == "denoise"
    x = calib_batches(2, size=24, seed=5)
    batch = torch.cat(x).numpy()
    with torch.no_grad():
        ours = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(ours, load("ort", path, threads=1).run(batch), atol=1e-5)
    other = tiny_unet(seed=4)  # same architecture, other weights: the weights really come from the file
    with torch.no_grad():
        assert np.abs(other(torch.from_numpy(batch)).numpy() - ours).max() > 1e-3


def test_artifact_with_other_weights_names_what_is_missing(tmp_path):
    path = float_artifact(tmp_path)
    model = onnx.load(path)
    next(i for i in model.graph.initializer if i.name == "inc.0.weight").name = "renamed.weight"
    for node in model.graph.node:
        node.input[:] = ["renamed.weight" if i == "inc.0.weight" else i for i in node.input]
    onnx.save(model, path)
    with pytest.raises(
        GreenpipeError, match=r"weights do not match recipe 'denoise' .* missing inc\.0\.weight"
    ):
        float_model_from_artifact(path)


def test_quantized_artifact_is_refused(tmp_path):
    path = float_artifact(tmp_path)
    report = json.loads((tmp_path / "compile_report.json").read_text())
    (tmp_path / "compile_report.json").write_text(
        json.dumps({**report, "variant": "ptq8", "dpu_numerics": True})
    )
    with pytest.raises(GreenpipeError, match="quantized artifact .*deploy the fp32 variant to the GPU"):
        float_model_from_artifact(path)


def test_missing_compile_report_is_a_user_error(tmp_path):
    path = float_artifact(tmp_path)
    (tmp_path / "compile_report.json").unlink()
    with pytest.raises(GreenpipeError, match="compile_report.json: missing; torch_cuda rebuilds the model"):
        float_model_from_artifact(path)


def test_missing_cuda_messages_name_the_cause_and_the_fix():
    cpu_build = missing_cuda_message("2.13.0+cpu", None, 0)
    assert "this torch 2.13.0+cpu is a CPU-only build (torch.version.cuda is None)" in cpu_build
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu<version>" in cpu_build
    no_gpu = missing_cuda_message("2.13.0+cu128", "12.8", 0)
    assert "built for CUDA 12.8 but sees 0 usable GPU(s)" in no_gpu and "CUDA_VISIBLE_DEVICES" in no_gpu
    for message in (cpu_build, no_gpu, missing_cuda_message(None, None, 0)):
        assert message.startswith("runtime 'torch_cuda' runs the float model on an NVIDIA GPU")
        assert "nvidia-smi -L" in message


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="this host has CUDA: the runtime loads instead of failing"
)
@pytest.mark.parametrize("runtime", ["torch_cuda", "torch_cuda_fp16"])
def test_load_without_cuda_raises_the_message(tmp_path, runtime):
    path = float_artifact(tmp_path)
    with pytest.raises(ToolchainMissing) as err:
        load(runtime, path, threads=1)
    assert str(err.value) == missing_cuda_message(torch.__version__, torch.version.cuda, 0)


@pytest.mark.gpu
@pytest.mark.parametrize(("runtime", "atol"), [("torch_cuda", 1e-4), ("torch_cuda_fp16", 1e-2)])
def test_gpu_agrees_with_ort_on_the_fp32_artifact(tmp_path, runtime, atol):
    path = float_artifact(tmp_path, seed=1)
    batch = torch.cat(calib_batches(4, size=32, seed=2)).numpy()
    expected = load("ort", path, threads=2).run(batch)
    runner = load(runtime, path, threads=2, batch=4)
    got = runner.run(batch)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=atol)
    desc = runner.describe()
    assert desc["provider"] == "CUDA" and desc["precision"] == (
        "fp16" if runtime.endswith("fp16") else "fp32"
    )
    assert desc["gpu"] and desc["label"].startswith("PyTorch ")
