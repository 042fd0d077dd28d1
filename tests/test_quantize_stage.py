"""Stage quantize on a tiny on-disk workspace: artifact, report, reference outputs, metrics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from greenpipe.data.prepared import load_split
from greenpipe.errors import GreenpipeError
from greenpipe.io import read_json
from greenpipe.quant.artifact import read_quant_artifact
from greenpipe.quant.stage import quantize_stage
from tasks.quantize import main
from tests.stage_fixtures import make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="module")
def ptq8(ws):
    out = ws.root / "quant" / "ptq8"
    return out, quantize_stage(ws.params, "ptq8", ws.model, ws.calib, ws.data, out)


def test_ptq8_writes_qcdq_report_and_reference(ws, ptq8):
    out, metrics = ptq8
    report = read_json(out / "quant_report.json")
    assert report["artifact"] == "model.qcdq.onnx" and (out / "model.qcdq.onnx").exists()
    onnx.checker.check_model(str(out / "model.qcdq.onnx"), full_check=True)
    assert report["dpu_numerics"] and report["deployable_to_dpu"] and report["bits"]["weights"] == 8
    assert report["scales_all_pow2"] is True
    acts = [s for s in report["scales"].values() if s["kind"] == "activation"]
    assert acts and all(s["log2_scale"] == int(s["log2_scale"]) for s in acts)
    assert report["calibration"]["activations"] == ws.params.quantize.variants["ptq8"]["act_calibration"]
    assert report["calibration"]["batches"] == report["calibration"]["samples_available"] == 4
    assert report["float_layers"] == [] and report["multiple"] == 4

    reference = read_quant_artifact(out).reference()
    val = load_split(ws.data, "val")
    assert sorted(reference) == sorted(p.name for p in val)
    assert all(a.shape == (48, 48, 3) and 0 <= a.min() and a.max() <= 1 for a in reference.values())

    assert metrics["source"] == "fake-quant PyTorch model on val (not the deployed artifact)"
    assert metrics["samples"] == len(val) and np.isfinite(metrics["psnr"]) and 0 < metrics["ssim"] <= 1
    assert metrics["calibration_batches"] == 4 and metrics["wall_s"] > 0


def test_fp32_exports_plain_onnx(ws):
    out = ws.root / "quant" / "fp32"
    metrics = quantize_stage(ws.params, "fp32", ws.model, ws.calib, ws.data, out)
    report = read_json(out / "quant_report.json")
    assert report["artifact"] == "model.onnx" and not (out / "model.qcdq.onnx").exists()
    assert report["scales"] == {} and not report["dpu_numerics"] and report["bits"]["weights"] == 32
    ops = {n.op_type for n in onnx.load(out / "model.onnx").graph.node}
    assert "QuantizeLinear" not in ops and "Conv" in ops
    assert metrics["dpu_numerics"] is False


def test_unknown_variant_is_a_user_error(ws, tmp_path, capsys):
    with pytest.raises(GreenpipeError, match="--variant int3: not in quantize.variants"):
        quantize_stage(ws.params, "int3", ws.model, ws.calib, ws.data, tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "--variant",
                "ptq8",
                "--model",
                str(tmp_path / "nowhere"),
                "--calib",
                str(ws.calib),
                "--data",
                str(ws.data),
                "--out",
                str(tmp_path / "o"),
                "--metrics",
                str(tmp_path / "m.json"),
            ]
        )
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err
