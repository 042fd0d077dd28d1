"""int8 weights on x86 without VNNI: which hosts saturate, and the uint8 re-encoding is exact and fixes them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from greenpipe.runtime import load
from greenpipe.runtime.u8s8 import NOTE, u8s8_saturates, uint8_weights


def test_only_x86_without_vnni_saturates():
    assert u8s8_saturates({"avx2", "fma"}, "x86_64")
    assert u8s8_saturates({"sse4_1"}, "AMD64")
    assert not u8s8_saturates({"avx2", "avx512f", "avx512_vnni"}, "x86_64")
    assert not u8s8_saturates({"avx2", "avx_vnni"}, "x86_64")
    assert not u8s8_saturates({"amx_int8"}, "x86_64")
    assert not u8s8_saturates(set(), "aarch64")  # Arm's int8 dot products accumulate in int32


def _conv(channels: int = 32, size: int = 16, per_channel: bool = False, seed: int = 0):
    """``x -> Q(u8) -> DQ -> Conv(DQ(int8 w)) -> Q(u8) -> DQ``: full-range weights, the case that saturates."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (channels, channels, 3, 3)).astype(np.int8)
    if per_channel:
        w_s = np.full(channels, 1 / 127, np.float32)
        w_zp = np.zeros(channels, np.int8)
    else:
        w_s, w_zp = np.array(1 / 127, np.float32), np.array(0, np.int8)
    out_scale = 9 * channels / 127 / 6  # about the output range of 255-level inputs in [0, 1]
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.array(1 / 255, np.float32), "x_s"), (np.array(0, np.uint8), "x_zp"), (w, "w"), (w_s, "w_s"),
        (w_zp, "w_zp"), (np.array(out_scale, np.float32), "y_s"), (np.array(128, np.uint8), "y_zp"))]
    axis = {"axis": 0} if per_channel else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_zp"], ["wd"], **axis),
             helper.make_node("Conv", ["xd", "wd"], ["yf"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["yf", "y_s", "y_zp"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["y"])]
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out_scale


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The QDQ graph computed in float64 by numpy: no int8 kernel involved."""
    import torch

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    xq = np.clip(np.round(x * 255), 0, 255) / 255
    w = (inits["w"].astype(np.float64) - inits["w_zp"].astype(np.float64).reshape(-1, 1, 1, 1)
         if inits["w_zp"].ndim else inits["w"].astype(np.float64) - float(inits["w_zp"]))
    w = w * (inits["w_s"].reshape(-1, 1, 1, 1) if inits["w_s"].ndim else float(inits["w_s"]))
    y = torch.nn.functional.conv2d(torch.from_numpy(xq), torch.from_numpy(w), padding=1).numpy()
    s = float(inits["y_s"])
    return (np.clip(np.round(y / s) + 128, 0, 255) - 128) * s


@pytest.mark.parametrize("per_channel", [False, True])
def test_the_re_encoding_keeps_every_dequantized_weight(per_channel):
    model, _ = _conv(per_channel=per_channel)
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert uint8_weights(model) == 1
    after = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "w")
    assert after["w"].dtype == np.uint8 and after[dq.input[2]].dtype == np.uint8
    old = before["w"].astype(np.int32) - before["w_zp"].astype(np.int32).reshape(-1, *[1] * (per_channel * 3))
    new = after["w"].astype(np.int32) - after[dq.input[2]].astype(np.int32).reshape(-1, *[1] * (per_channel * 3))
    np.testing.assert_array_equal(old, new)
    for name in ("x_s", "x_zp", "y_s", "y_zp"):  # the activations' quantization is untouched
        np.testing.assert_array_equal(after[name], before[name])
    onnx.checker.check_model(model, full_check=True)
    assert uint8_weights(model) == 0  # nothing int8 is left to re-encode


@pytest.mark.parametrize("runtime", ["ort", "openvino"])
def test_the_runners_compute_full_range_int8_weights_exactly_on_this_host(tmp_path, runtime):
    # On an AVX2-only host u8 x s8 saturates and the int8 file as written is off by many LSBs (checked
    # through ONNX Runtime with the re-encoding bypassed); the runner re-encodes and is within rounding.
    model, out_scale = _conv()
    onnx.save(model, tmp_path / "conv.onnx")
    x = np.random.default_rng(1).random((1, 32, 16, 16), dtype=np.float32)
    expected = _reference(model, x.astype(np.float64))
    runner = load(runtime, tmp_path / "conv.onnx", 1, 1)
    assert np.abs(runner.run(x) - expected).max() <= out_scale * 1.01  # one output LSB of rounding at most
    assert (NOTE in runner.describe()["label"]) == u8s8_saturates()
    if u8s8_saturates():
        import onnxruntime as ort

        raw = ort.InferenceSession(str(tmp_path / "conv.onnx"), providers=["CPUExecutionProvider"])
        assert np.abs(raw.run(None, {"x": x})[0] - expected).max() > 3 * out_scale  # the defect is real here
