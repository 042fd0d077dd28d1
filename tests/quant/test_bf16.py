"""Variant bf16: its artifact keeps the bf16 rounding, native bf16 OpenVINO computes it, and the report
says native or emulated from the CPU's flags."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from greenpipe.quant import quantize_variant
from greenpipe.quant.bf16 import native_bf16
from greenpipe.runtime import load
from tests.stage_fixtures import calib_batches, compiled_onnx, tiny_unet


@pytest.fixture(scope="module")
def bf16(tmp_path_factory):
    result = quantize_variant("bf16", {"bf16": {}}, tiny_unet(seed=2), calib_batches(seed=3))
    return result, compiled_onnx("bf16", tmp_path_factory.mktemp("bf16"))


def test_weights_and_activations_are_bf16_values(bf16):
    result, _ = bf16
    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and result.bits == {"weights": 16, "activations": 16, "bias": 16}
    for conv in convs:
        assert torch.equal(conv.weight, conv.weight.to(torch.bfloat16).float())
    x = calib_batches(1, seed=5)[0]
    with torch.no_grad():
        y, y_float = result.model(x), tiny_unet(seed=2)(x)
    assert not torch.equal(y, y_float)  # bf16 rounding changed something
    assert float((y - y_float).abs().max()) < 0.05  # ... by bf16's precision, not more


def test_artifact_keeps_the_rounding_and_runtimes_compute_it(bf16):
    result, path = bf16
    casts = [n for n in onnx.load(path).graph.node if n.op_type == "Cast"]
    assert sum(a.i == onnx.TensorProto.BFLOAT16 for n in casts for a in n.attribute) >= 2 * 13  # in + out per conv
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fake = result.model(x).numpy()
    np.testing.assert_array_equal(load("ort", path, 1).run(x.numpy()), fake)
    for runtime in ("openvino", "openvino_bf16"):
        y = load(runtime, path, 1).run(x.numpy())
        if native_bf16():
            np.testing.assert_array_equal(y, fake, err_msg=runtime)
        else:  # OpenVINO drops the activations' bf16 round trips on a CPU without bf16 (see runtime/openvino.py)
            np.testing.assert_allclose(y, fake, atol=0.01, err_msg=runtime)


@pytest.mark.parametrize("flags, execution", [("fpu avx512f avx512_bf16 avx512_vnni", "native"),
                                              ("fpu sse4_2 avx2 fma", "emulated")])
def test_native_bf16_reads_the_cpu_flags(tmp_path, flags, execution):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test CPU\nflags\t\t: {flags}\n")
    assert (execution == "native") == bool(native_bf16(cpuinfo))


def test_report_says_how_this_cpu_runs_it(bf16):
    result, _ = bf16
    here = native_bf16()
    report = result.report["bf16"]
    assert report["cpu_flags"] == here and report["execution"] == ("native" if here else "emulated")
    assert len(result.report["quantized_layers"]) == 13
