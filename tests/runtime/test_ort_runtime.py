"""ORT runtime: loads an artifact, runs it, says what it ran on; a broken file is a user error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenpipe.errors import GreenpipeError
from greenpipe.quant.export import export_onnx
from greenpipe.runtime import load
from tests.stage_fixtures import calib_batches, tiny_unet


def test_ort_runner_matches_torch_and_describes_itself(tmp_path):
    model = tiny_unet()
    path = export_onnx(model, calib_batches(1)[0], tmp_path)
    runner = load("ort", path, threads=2, batch=1)
    x = calib_batches(1, size=24, seed=4)[0]
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(runner.run(x.numpy()), expected, atol=1e-5)
    desc = runner.describe()
    assert desc["runtime"] == "ort" and desc["threads"] == 2 and desc["provider"] == "CPUExecutionProvider"
    assert desc["host"].startswith("local CPU (") and desc["host"].endswith("2 threads")
    assert desc["label"].startswith("ONNX Runtime ")


def test_corrupt_artifact_is_a_user_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(GreenpipeError, match="ONNX Runtime cannot load it"):
        load("ort", bad, threads=1)


def test_unregistered_runtime_lists_the_registered_ones(tmp_path):
    registered = "openvino, openvino_bf16, ort, tflite, torch_cuda, torch_cuda_fp16, vart"
    with pytest.raises(GreenpipeError, match=f"unknown runtime 'tensorrt'; registered: {registered}"):
        load("tensorrt", tmp_path / "m.plan", threads=1)
