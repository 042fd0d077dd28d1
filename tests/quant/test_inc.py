"""Variant inc: INC's accuracy-aware tuning records every trial, fails naming what to change, deploys int8."""

from __future__ import annotations

import pytest

from greenpipe.errors import GreenpipeError, ParamsError
from greenpipe.io import read_json
from greenpipe.quant import parse_variant, quantize_variant
from greenpipe.quant.context import QuantContext, quant_context
from greenpipe.quant.inc import IncConfig, tuning_space
from tests.stage_fixtures import calib_batches, make_workspace, stage_params, tiny_unet
from tests.workspace import make_prepared

CONVS = ["inc.0", "inc.2", "downs.0.1.0", "downs.0.1.2", "downs.1.1.0", "downs.1.1.2", "ups.0.1", "ups.1.1",
         "up_convs.0.0", "up_convs.0.2", "up_convs.1.0", "up_convs.1.2", "head"]  # the tiny UNet's


def _near_constant_calibration() -> list:
    """Calibrating on near-constant inputs sets tiny activation scales: the int8 model clips, a bad trial."""
    return [b * 0.02 for b in calib_batches(2)]


def test_trial_log_records_every_trial_with_pass_or_fail(tmp_path):
    # The all-int8 trial (badly calibrated) fails; the second keeps every conv float, scores
    # exactly the fp32 baseline and passes, so tuning stops there.
    ctx = QuantContext(data=make_prepared(tmp_path / "data", size=48), seed=0, multiple=4)
    config = {"max_trials": 3, "act_algo": ["minmax"], "fp32_layers": [[], CONVS]}
    with quant_context(ctx):
        result = quantize_variant("inc", {"inc": config}, tiny_unet(), _near_constant_calibration())

    tuning = result.report["tuning"]
    trials = tuning["trials"]
    assert [t["passed"] for t in trials] == [False, True] and tuning["chosen_trial"] == 2
    assert trials[0]["fp32_layers"] == [] and trials[1]["fp32_layers"] == sorted(CONVS)
    assert trials[0]["relative_loss"] > tuning["tolerable_loss"] and trials[0]["score"] < tuning["target_score"]
    assert trials[1]["score"] == tuning["fp32_score"] and trials[1]["relative_loss"] == 0
    assert all(t["act_algo"] == "minmax" and t["w_granularity"] == "per_channel" and t["wall_s"] > 0 for t in trials)
    assert [(t["trial"], t["passed"]) for t in result.metrics["trials"]] == [(1, False), (2, True)]
    assert result.metrics["chosen_trial"] == 2 and result.metrics["fp32_score"] == tuning["fp32_score"]
    assert len(result.report["float_layers"]) == len(CONVS) and result.bits["weights"] == 32


def test_stage_writes_the_trial_log_and_compiles_to_int8(tmp_path):
    from greenpipe.quant.stage import quantize_stage
    from tasks.compile import compile_stage

    ws = make_workspace(tmp_path)
    params = stage_params(quantize={"variants": {"inc": {"max_trials": 1, "calib_samples": 2, "act_algo": ["minmax"]}}})
    metrics = quantize_stage(params, "inc", ws.model, ws.calib, ws.data, tmp_path / "quant")
    report = read_json(tmp_path / "quant" / "quant_report.json")
    assert [t["passed"] for t in report["tuning"]["trials"]] == [True] == [t["passed"] for t in metrics["trials"]]
    assert report["calibration"]["batches"] == 2 and report["tuning"]["chosen_trial"] == metrics["chosen_trial"] == 1
    assert report["dpu_numerics"] is False and report["deployable_to_dpu"] is False
    assert "not DPU numerics" in report["numerics"] and metrics["numerics"] == "Intel x86 path (INC)"
    assert report["format"] == "qdq" and report["scales"]["inc.0.weight"]["kind"] == "weight"
    assert report["scales"]["input"]["dtype"] == "uint8" and report["scales_all_pow2"] is False
    assert report["quantized_layers"][-1] == {
        "layer": "head", "type": "Conv2d",
        "output": "float: it feeds a float op (the residual add), so its result is not requantized"}
    assert report["bias"]["convs"] == len(CONVS) and metrics["bits"]["weights"] == 8

    compiled = compile_stage(params, "inc", "cpu", tmp_path / "quant", ws.data, tmp_path / "compiled")
    # Every conv runs as an int8 QLinearConv in ORT except the head, whose output stays float.
    assert compiled["convs"] == len(CONVS) and compiled["ort_int8_convs"] == len(CONVS) - 1
    assert compiled["agreement"]["max_abs_diff"] <= params.compile.targets["cpu"].agreement_tolerance
    rewrite = read_json(tmp_path / "compiled" / "compile_report.json")["rewrite"]
    assert rewrite["bias_to_int32"] == len(CONVS) and rewrite["bias_kept_float"] == 0


def test_no_trial_within_tolerance_fails_listing_the_trials(tmp_path):
    ctx = QuantContext(data=make_prepared(tmp_path / "data", size=48), seed=0, multiple=4)
    config = {"max_trials": 1, "act_algo": ["minmax"]}
    with quant_context(ctx), pytest.raises(GreenpipeError) as err:
        quantize_variant("inc", {"inc": config}, tiny_unet(), _near_constant_calibration())
    msg = str(err.value)
    assert "no tuning trial within tolerable_loss 0.012" in msg and "trial 1: minmax activations" in msg
    assert "max_trials" in msg and "fp32_layers" in msg


def test_bad_inc_keys_fail_naming_them():
    with pytest.raises(ParamsError) as err:
        parse_variant("inc", {"tolerable_los": 0.01})
    assert "quantize.variants.inc.tolerable_los" in str(err.value) and "unknown key" in str(err.value)
    with pytest.raises(ParamsError) as err:
        parse_variant("inc", {"act_algo": ["entropy"], "tolerable_loss": 1.5, "max_trials": 0})
    msg = str(err.value)
    assert "quantize.variants.inc.act_algo.0 = 'entropy'" in msg and "'kl'" in msg
    assert "quantize.variants.inc.tolerable_loss = 1.5" in msg and "quantize.variants.inc.max_trials = 0" in msg
    with pytest.raises(ParamsError, match=r"quantize.variants.inc.fp32_layers: \['incc.0'\] not a layer"):
        tuning_space(IncConfig(method="inc", fp32_layers=[[], ["incc.0"]]), tiny_unet())
    # a recipe's own variant table: the error names where the entry is
    _, config = parse_variant("inc", {"fp32_layers": [[], ["incc.0"]]}, "segment.variants")
    with pytest.raises(ParamsError, match=r"^segment.variants.inc.fp32_layers: \['incc.0'\] not a layer"):
        tuning_space(config, tiny_unet())


def test_tuning_space_order_and_stage_context():
    config = IncConfig(act_algo=["minmax", "kl"], w_granularity=["per_channel", "per_tensor"],
                       fp32_layers=[[], ["head", "inc.0"]])
    space = tuning_space(config, tiny_unet())
    assert len(space) == 8 and space[0] == {"act_algo": "minmax", "w_granularity": "per_channel", "fp32_layers": []}
    assert space[1]["w_granularity"] == "per_tensor" and space[2]["act_algo"] == "kl"
    assert space[4]["fp32_layers"] == ["head", "inc.0"]
    with pytest.raises(GreenpipeError, match="inc needs the val split"):
        quantize_variant("inc", {"inc": {}}, tiny_unet(), calib_batches())
