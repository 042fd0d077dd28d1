"""Variant pt2e8: PyTorch's own PT2E static int8 (no tuning) quantizes once, compiles to int8 QLinearConv in
ONNX Runtime and computes what its fake-quant model computes."""

from __future__ import annotations

import pytest
import torch

from greenpipe.errors import GreenpipeError, ParamsError
from greenpipe.io import read_json
from greenpipe.quant import parse_variant, quantize_variant
from tests.stage_fixtures import calib_batches, make_workspace, stage_params, tiny_unet

CONVS = 13  # the tiny UNet's


def test_stage_quantizes_once_and_compiles_to_int8(tmp_path):
    from greenpipe.quant.stage import quantize_stage
    from tasks.compile import compile_stage

    ws = make_workspace(tmp_path)
    params = stage_params(quantize={"variants": {"pt2e8": {"calib_samples": 2}}})
    metrics = quantize_stage(params, "pt2e8", ws.model, ws.calib, ws.data, tmp_path / "quant")
    report = read_json(tmp_path / "quant" / "quant_report.json")
    assert report["dpu_numerics"] is False and report["deployable_to_dpu"] is False
    assert "not DPU numerics" in report["numerics"] and metrics["numerics"] == "Intel x86 path (PyTorch PT2E)"
    assert report["calibration"]["batches"] == 2 and "no accuracy-aware tuning" in report["calibration"]["method"]
    assert "tuning" not in report and "trials" not in metrics
    assert report["format"] == "qdq" and report["scales"]["input"]["dtype"] == "uint8"
    assert report["scales_all_pow2"] is False and report["bias"]["convs"] == CONVS
    assert len(report["quantized_layers"]) == CONVS and report["float_layers"] == []
    # quality: int8 of a trained-by-nobody tiny UNet stays close to its float score
    assert metrics["quality"]["value"] > 0 and metrics["bits"] == {"weights": 8, "activations": 8, "bias": 32}

    compiled = compile_stage(params, "pt2e8", "cpu", tmp_path / "quant", ws.data, tmp_path / "compiled")
    assert compiled["convs"] == CONVS and compiled["ort_int8_convs"] == CONVS - 1  # the head's output stays float
    assert compiled["agreement"]["max_abs_diff"] <= params.compile.targets["cpu"].agreement_tolerance


def test_the_fake_quant_model_is_int8_and_close_to_float():
    model = tiny_unet(seed=2)
    result = quantize_variant("pt2e8", {"pt2e8": {"calib_samples": 4}}, model, calib_batches(4, seed=3))
    x = calib_batches(1, seed=5)[0]
    with torch.no_grad():
        y, y_float = result.model(x), model(x)
    assert not torch.equal(y, y_float)
    assert float((y - y_float).abs().max()) < 0.1 * float(y_float.abs().max())


def test_refuses_a_quantized_model_and_no_calibration():
    first = quantize_variant("pt2e8", {"pt2e8": {}}, tiny_unet(seed=2), calib_batches(2, seed=3)).model
    with pytest.raises(GreenpipeError, match="already-quantized"):
        quantize_variant("pt2e8", {"pt2e8": {}}, first, calib_batches(2, seed=3))
    with pytest.raises(GreenpipeError, match="no calibration batches"):
        quantize_variant("pt2e8", {"pt2e8": {}}, tiny_unet(seed=2), [])


def test_bad_keys_fail_naming_them():
    with pytest.raises(ParamsError, match=r"quantize\.variants\.pt2e8\.calib_samples"):
        parse_variant("pt2e8", {"calib_samples": -1})
    with pytest.raises(ParamsError, match=r"per_channel"):
        parse_variant("pt2e8", {"per_channel": False})
