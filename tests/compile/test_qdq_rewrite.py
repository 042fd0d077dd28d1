"""The QCDQ -> QDQ rewrite is exact, and ORT runs every conv of its output as QLinearConv."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from greenpipe.compile.onnx_cpu import build
from greenpipe.compile.qdq import to_ort_qdq
from greenpipe.quant import quantize_variant
from greenpipe.quant.export import EXPORT_OPSET, export_onnx
from greenpipe.runtime.ort import OrtRunner
from tests.stage_fixtures import calib_batches, tiny_unet


@pytest.fixture(scope="module")
def qcdq(tmp_path_factory) -> onnx.ModelProto:
    out = tmp_path_factory.mktemp("qcdq")
    result = quantize_variant("ptq8", {"ptq8": {}}, tiny_unet(seed=2), calib_batches(seed=3))
    return onnx.load(export_onnx(result.model, calib_batches(1)[0], out))


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def test_rewrite_is_bit_identical_to_the_qcdq_export(qcdq, tmp_path):
    rewritten, stats = to_ort_qdq(qcdq)
    onnx.save(qcdq, tmp_path / "qcdq.onnx")
    onnx.save(rewritten, tmp_path / "qdq.onnx")
    before = OrtRunner(tmp_path / "qcdq.onnx", threads=1, batch=1)
    after = OrtRunner(tmp_path / "qdq.onnx", threads=1, batch=1)
    gen = torch.Generator().manual_seed(11)
    for shape in [(1, 3, 32, 32), (1, 3, 20, 44), (3, 3, 64, 64)]:
        x = torch.rand(*shape, generator=gen).numpy()
        np.testing.assert_array_equal(after.run(x), before.run(x))
    assert stats["bias_to_int32"] == _ops(qcdq)["Conv"]
    assert stats["weight_clips_folded"] == _ops(qcdq)["Conv"]


def test_ort_fuses_every_conv_into_qlinearconv(qcdq, tmp_path):
    rewritten, _ = to_ort_qdq(qcdq)
    onnx.save(rewritten, tmp_path / "qdq.onnx")
    OrtRunner(tmp_path / "qdq.onnx", threads=1, batch=1, optimized_model_path=tmp_path / "opt.onnx")
    executed = _ops(onnx.load(tmp_path / "opt.onnx"))
    assert executed["QLinearConv"] == _ops(qcdq)["Conv"] > 0
    assert not {"Conv", "FusedConv", "NchwcConv"} & set(executed)


def test_float_graph_passes_through_unchanged(tmp_path):
    exported = onnx.load(export_onnx(tiny_unet(), calib_batches(1)[0], tmp_path))
    built, rewrite = build(exported, EXPORT_OPSET)
    assert rewrite == {}
    assert _ops(built) == _ops(exported) and "QuantizeLinear" not in _ops(built)


def test_build_converts_to_the_target_opset(qcdq, tmp_path):
    built, _ = build(qcdq, 19)
    assert next(o.version for o in built.opset_import if o.domain in ("", "ai.onnx")) == 19
    onnx.save(built, tmp_path / "m19.onnx")
    onnx.save(build(qcdq, EXPORT_OPSET)[0], tmp_path / "m17.onnx")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)).numpy()
    np.testing.assert_array_equal(
        OrtRunner(tmp_path / "m19.onnx", 1, 1).run(x), OrtRunner(tmp_path / "m17.onnx", 1, 1).run(x)
    )


class _MixedConcat(torch.nn.Module):
    """A concat of a ReLU output, a signed conv output and an up-sampled ReLU output, then a conv."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.b = torch.nn.Conv2d(3, 4, 3, padding=1)  # no ReLU: signed, so encoded with zero point 128
        self.c = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                                     torch.nn.Upsample(scale_factor=2, mode="nearest"))
        self.head = torch.nn.Conv2d(12, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), self.b(x), self.c(x)], dim=1))


def test_concat_of_inputs_with_different_zero_points_stays_exact(tmp_path):
    # uint8 encodes the ReLU input with zero point 0 and the signed one with 128: the integer concat
    # must put them on one encoding, or the head reads the ReLU channels 128 LSB off.
    torch.manual_seed(4)
    result = quantize_variant("ptq8", {"ptq8": {}}, _MixedConcat().eval(), calib_batches(seed=5))
    source = export_onnx(result.model, calib_batches(1)[0], tmp_path)
    rewritten, stats = to_ort_qdq(onnx.load(source))
    assert stats["concat_inputs_shifted"] == 2 and stats["nonnegative_to_uint8"] == 1
    onnx.save(rewritten, tmp_path / "qdq.onnx")
    reference = OrtRunner(source, threads=1, batch=1)
    deployed = OrtRunner(tmp_path / "qdq.onnx", threads=1, batch=1, optimized_model_path=tmp_path / "opt.onnx")
    lsb = _output_scale(onnx.load(source))
    gen = torch.Generator().manual_seed(6)
    for shape in [(1, 3, 32, 32), (2, 3, 16, 48)]:
        x = torch.rand(*shape, generator=gen).numpy()
        assert np.abs(deployed.run(x) - reference.run(x)).max() <= lsb
    executed = _ops(onnx.load(tmp_path / "opt.onnx"))
    assert executed["QLinearConv"] == 4 and not {"Conv", "FusedConv", "NchwcConv"} & set(executed)


def _output_scale(model: onnx.ModelProto) -> float:
    """The scale of the DequantizeLinear that produces the graph's output (one LSB of the output)."""
    out = model.graph.output[0].name
    dq = next(n for n in model.graph.node if out in n.output)
    assert dq.op_type == "DequantizeLinear"
    scale = next(i for i in model.graph.initializer if i.name == dq.input[1]) if any(
        i.name == dq.input[1] for i in model.graph.initializer) else next(
        n.attribute[0].t for n in model.graph.node if dq.input[1] in n.output)
    return float(onnx.numpy_helper.to_array(scale))


def _qdq_concat_graph() -> onnx.ModelProto:
    """PT2E-style QDQ: two uint8 branches of different scale and zero point, concatenated, requantized, a conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [const("s_a", np.float32(0.011)), const("z_a", np.uint8(3)),
             const("s_b", np.float32(0.023)), const("z_b", np.uint8(131)),
             const("s_o", np.float32(0.017)), const("z_o", np.uint8(97)),
             const("w", rng.normal(0, 0.2, (2, 6, 1, 1)).astype(np.float32)),
             const("s_w", np.full(2, 0.004, np.float32)), const("z_w", np.zeros(2, np.int8)),
             const("s_y", np.float32(0.05)), const("z_y", np.uint8(128)), const("neg", np.float32(-1.0))]
    nodes = [
        helper.make_node("Mul", ["x", "neg"], ["x_neg"]),  # a signed branch beside the non-negative input
        helper.make_node("QuantizeLinear", ["x", "s_a", "z_a"], ["a_q"]),
        helper.make_node("DequantizeLinear", ["a_q", "s_a", "z_a"], ["a"]),
        helper.make_node("QuantizeLinear", ["x_neg", "s_b", "z_b"], ["b_q"]),
        helper.make_node("DequantizeLinear", ["b_q", "s_b", "z_b"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
        helper.make_node("QuantizeLinear", ["cat", "s_o", "z_o"], ["cat_q"]),
        helper.make_node("DequantizeLinear", ["cat_q", "s_o", "z_o"], ["cat_dq"]),
        helper.make_node("QuantizeLinear", ["w", "s_w", "z_w"], ["w_q"], axis=0),
        helper.make_node("DequantizeLinear", ["w_q", "s_w", "z_w"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["cat_dq", "w_dq"], ["conv"]),
        helper.make_node("QuantizeLinear", ["conv", "s_y", "z_y"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "s_y", "z_y"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "concat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)])


def test_concat_of_inputs_with_different_scales_runs_on_the_output_encoding(tmp_path):
    source = _qdq_concat_graph()
    rewritten, stats = to_ort_qdq(source)
    assert stats["concat_quantized_per_input"] == 1
    concat = next(n for n in rewritten.graph.node if n.op_type == "Concat")
    producers = {o: n for n in rewritten.graph.node for o in n.output}
    assert [producers[i].op_type for i in concat.input] == ["QuantizeLinear", "QuantizeLinear"]
    onnx.save(source, tmp_path / "qdq_ref.onnx")
    onnx.save(rewritten, tmp_path / "qdq.onnx")
    reference, deployed = OrtRunner(tmp_path / "qdq_ref.onnx", 1, 1), OrtRunner(tmp_path / "qdq.onnx", 1, 1)
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(8)).numpy() * 2
    assert np.abs(deployed.run(x) - reference.run(x)).max() <= 0.05  # s_y: one LSB of the output
