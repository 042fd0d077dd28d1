"""Stage compile: ONNX for the CPU target, int8 kernels, and the agreement gate."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.io import read_json
from greenpipe.quant.artifact import REFERENCE_FILE, write_reference
from greenpipe.quant.stage import quantize_stage
from tasks.compile import compile_stage
from tests.stage_fixtures import make_workspace, stage_params


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    for variant in ("fp32", "ptq8"):
        quantize_stage(ws.params, variant, ws.model, ws.calib, ws.data, ws.root / "quant" / variant)
    return ws


@pytest.mark.parametrize("variant", ["fp32", "ptq8"])
def test_compile_writes_checked_artifact_that_agrees(ws, variant, tmp_path):
    metrics = compile_stage(ws.params, variant, "cpu", ws.root / "quant" / variant, ws.data, tmp_path)
    onnx.checker.check_model(str(tmp_path / "model.onnx"), full_check=True)
    report = read_json(tmp_path / "compile_report.json")
    assert report["variant"] == variant and report["recipe"] == "denoise"
    agreement = metrics["agreement"]
    assert agreement["max_abs_diff"] <= ws.params.compile.targets["cpu"].agreement_tolerance
    assert report["agreement"]["samples"] == 2 and len(report["agreement"]["per_sample"]) == 2
    if variant == "ptq8":
        assert agreement["max_abs_diff"] == 0.0  # exact rewrite of an exact fixed-point model
        assert metrics["ort_int8_convs"] == metrics["convs"] == report["ops"]["Conv"]
        assert report["rewrite"]["bias_to_int32"] == metrics["convs"]
    else:
        assert metrics["ort_int8_convs"] == 0 and report["rewrite"] == {}
    assert metrics["model_mb"] > 0 and "local CPU" in metrics["source"]


def test_disagreement_fails_naming_variant_image_diff_and_tolerance(ws, tmp_path):
    quant = tmp_path / "quant"
    src = ws.root / "quant" / "ptq8"
    quant.mkdir()
    for f in src.iterdir():
        (quant / f.name).write_bytes(f.read_bytes())
    with np.load(src / REFERENCE_FILE) as npz:
        ref = {k: npz[k].astype(np.float32) for k in npz.files}
    victim = sorted(ref)[-1]
    ref[victim] = np.clip(ref[victim] + 0.05, 0, 1)
    write_reference(quant / REFERENCE_FILE, ref)
    with pytest.raises(GreenpipeError) as err:
        compile_stage(ws.params, "ptq8", "cpu", quant, ws.data, tmp_path / "out")
    msg = str(err.value)
    assert "compile ptq8 for cpu" in msg and repr(victim) in msg
    assert re.search(
        r"max \|diff\| = 0\.0[45]\d* > tolerance 0\.0079 \(\d+ of \d+ outputs beyond it, share [\d.e-]+; "
        r"isolated rounding flips pass .*\) \(compile\.targets\.cpu\.agreement_tolerance\)", msg
    )
    # the report is still written, so the failure can be inspected
    assert read_json(tmp_path / "out" / "compile_report.json")["agreement"]["worst_sample"] == victim


def test_unknown_target_and_missing_quant_dir_are_user_errors(ws, tmp_path):
    with pytest.raises(GreenpipeError, match="--target gpu9: not in compile.targets"):
        compile_stage(ws.params, "ptq8", "gpu9", ws.root / "quant" / "ptq8", ws.data, tmp_path)
    with pytest.raises(GreenpipeError, match="quant_report.json: missing"):
        compile_stage(ws.params, "ptq8", "cpu", tmp_path / "nothing", ws.data, tmp_path / "out")


def test_qat4_with_4bit_activations_compiles_exactly(ws, tmp_path):
    """4-bit activations export as Q_int8 -> Clip(-8, 7): the uint8 rewrite moves those bounds too, and a
    bias too fine for the coarse accumulator scale stays float, so the artifact equals fake-quant."""
    variants = dict(ws.params.quantize.variants)
    variants["qat4"] = {**variants["qat4"], "act_bits": 4, "steps": 3}
    params = stage_params(quantize={"variants": variants})
    quantize_stage(params, "qat4", ws.model, ws.calib, ws.data, tmp_path / "quant")
    metrics = compile_stage(params, "qat4", "cpu", tmp_path / "quant", ws.data, tmp_path / "compiled")
    assert metrics["agreement"]["max_abs_diff"] == 0.0
    report = read_json(tmp_path / "compiled" / "compile_report.json")
    assert report["rewrite"]["clips_to_uint8"] > 0
    assert metrics["ort_int8_convs"] + report["rewrite"]["bias_kept_float"] == metrics["convs"]


def test_the_stored_reference_keeps_float_outputs_exactly(tmp_path):
    """A detector's logits reach 30: stored as float16 they moved by up to 2**-7, the whole tolerance."""
    from greenpipe.quant.artifact import QuantArtifact

    logits = np.random.default_rng(0).uniform(-32, 32, (50, 8)).astype(np.float32)
    write_reference(tmp_path / REFERENCE_FILE, {"tile": logits})
    stored = QuantArtifact(tmp_path, {"variant": "fp32"}).reference()["tile"]
    assert stored.dtype == np.float32 and np.array_equal(stored, logits)
