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
