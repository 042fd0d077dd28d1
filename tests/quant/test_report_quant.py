"""The report's quantization views: bits labels, per-layer SQNR from the ONNX exports, the plot and table."""

from __future__ import annotations

import math

import onnx

from greenpipe.quant import quantize_variant
from greenpipe.quant.export import export_onnx
from greenpipe.report.quant import bits_label, layer_sqnr, sensitivity, sensitivity_markdown, sensitivity_plot, val_crops
from greenpipe.report.summary import Row
from greenpipe.io import write_json
from tests.stage_fixtures import calib_batches, tiny_unet
from tests.workspace import make_prepared


def test_bits_label():
    assert bits_label({"weights": 4, "activations": 8, "bias": 8}) == "w4a8"
    assert bits_label(None) is None


def _quant_dir(root, name, result, example):
    path = export_onnx(result.model, example, root / name)
    write_json(root / name / "quant_report.json", {"variant": name, "artifact": path.name})
    return path


def _row(variant, psnr, fp32=30.0):
    return Row(variant, "local", {"psnr": psnr}, "psnr", fp32 - psnr, None, None, None, None, None, None, None, "s")


def test_sensitivity_of_best_and_worst_variant(tmp_path):
    data = make_prepared(tmp_path / "data", size=48)
    quant = tmp_path / "quant"
    example = calib_batches(1)[0]
    fp32 = _quant_dir(quant, "fp32", quantize_variant("fp32", {"fp32": {}}, tiny_unet(), []), example)
    good = quantize_variant("ptq8", {"ptq8": {}}, tiny_unet(), calib_batches())
    # Calibrating on a near-constant input sets tiny scales: activations clip, a bad variant.
    bad = quantize_variant("ptq8", {"ptq8": {"act_calibration": "minmax"}}, tiny_unet(), [example * 0.02])
    good_path = _quant_dir(quant, "good", good, example)
    _quant_dir(quant, "bad", bad, example)

    rows = [_row("fp32", 30.0), _row("good", 29.9), _row("bad", 20.0)]
    result = sensitivity(rows, quant, data)
    assert list(result) == ["good", "bad"]
    n_convs = sum(n.op_type == "Conv" for n in onnx.load(fp32).graph.node)
    assert len(result["good"]) == n_convs
    mean = lambda v: sum(r["sqnr_db"] for r in result[v]) / n_convs  # noqa: E731
    assert mean("good") > mean("bad")
    # fp32 against itself: no error anywhere.
    assert all(math.isinf(r["sqnr_db"]) for r in layer_sqnr(fp32, fp32, val_crops(data)))
    assert layer_sqnr(fp32, good_path, val_crops(data, count=1))[0]["layer"] == result["good"][0]["layer"]

    sensitivity_plot(result, tmp_path / "sensitivity.png")
    assert (tmp_path / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    md = sensitivity_markdown(result)
    assert "| # | layer | good dB | bad dB |" in md and "largest drop" in md


def test_no_sensitivity_without_fp32_export(tmp_path):
    assert sensitivity([_row("ptq8", 30.0)], tmp_path, tmp_path) is None
