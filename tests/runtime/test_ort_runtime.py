"""ORT runtime: loads an artifact, runs it, says what it ran on; a broken file is a user error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenpipe.errors import GreenpipeError
from greenpipe.quant.export import export_onnx
from greenpipe.runtime import load
from greenpipe.runtime.base import cpu_flags, cpu_isa, cpu_model, describe_host, native_bf16
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


def test_the_host_description_names_the_arithmetic_extensions_the_cpu_has(tmp_path):
    # Two hosts both called "AMD EPYC" by their hypervisor: one with AVX-512 VNNI and bf16, one with AVX2 only.
    zen4, avx2 = tmp_path / "zen4", tmp_path / "avx2"
    zen4.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_vnni avx512_bf16\n")
    avx2.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma f16c\n")
    assert cpu_isa(zen4) == "avx2 fma avx512f avx512_vnni avx512_bf16" and native_bf16(zen4) == ["avx512_bf16"]
    assert cpu_isa(avx2) == "avx2 fma" and native_bf16(avx2) == []
    assert cpu_isa(tmp_path / "missing") == "" and cpu_flags(tmp_path / "missing") == set()
    here = describe_host(2)
    assert here.startswith(f"local CPU ({cpu_model()}") and here.endswith("), 2 threads")
    assert (cpu_isa() in here) and (("; " in here) == bool(cpu_isa()))
