"""The segment recipe through the shared stages: train both networks, calibrate, quantize, compile, eval.

Tiny data and networks: this checks the plumbing and the files each stage writes, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from greenpipe.errors import GreenpipeError, ParamsError
from greenpipe.io import read_json
from greenpipe.recipes.segment.ingest import ingest
from greenpipe.recipes.segment.training import SegmentTraining
from greenpipe.train import train
from tasks.calib_dump import calib_dump
from tasks.compile import compile_stage
from tasks.recipe_stage import recipe_stage
from greenpipe.quant.stage import quantize_stage
from tests.recipes.segment.fixtures import segment_params
from tests.recipes.segment.test_data import photos  # noqa: F401  (fixture)

# The recipe's own variant table, its inc entry cut to one quick trial (the tiny networks barely train).
INC = {"max_trials": 1, "calib_samples": 2, "act_algo": ["minmax"], "fp32_layers": [["head"]], "tolerable_loss": 0.5}
PARAMS = segment_params(variants={**segment_params().recipe_section("segment").variants, "inc": INC})
VARIANTS = PARAMS.recipe_section("segment").quantize


@pytest.fixture(scope="module")
def work(photos, tmp_path_factory) -> Path:  # noqa: F811
    work = tmp_path_factory.mktemp("segstages")
    ingest(PARAMS, {"photos": photos, "out": work / "data"})
    return work


def test_recipe_stage_names_an_unknown_stage():
    with pytest.raises(GreenpipeError, match="recipe segment has no such stage.*ingest, validate, eval"):
        recipe_stage(PARAMS, "segment", "soak", {})


def test_a_user_checkpoint_gives_the_starting_weights(work, tmp_path):
    task = SegmentTraining(PARAMS.recipe_section("segment"), work / "data", "hrnet")
    assert task.initial_weights is None
    from greenpipe.recipes import get_recipe

    state = get_recipe("segment").build_model(task.model_args).state_dict()
    torch.save({"state_dict": state}, tmp_path / "mine.pt")
    mine = segment_params(models={"hrnet": {"arch": "hrnet", "width": "tiny", "checkpoint": str(tmp_path / "mine.pt")}})
    loaded = SegmentTraining(mine.recipe_section("segment"), work / "data", "hrnet").initial_weights
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    bad = segment_params(models={"unet": {"arch": "unet", "width": 4, "checkpoint": str(tmp_path / "none.pt")}})
    with pytest.raises(ParamsError, match="segment.models.unet.checkpoint"):
        SegmentTraining(bad.recipe_section("segment"), work / "data", "unet")
    with pytest.raises(ParamsError, match="--net resnet"):
        SegmentTraining(PARAMS.recipe_section("segment"), work / "data", "resnet")


@pytest.mark.slow
@pytest.mark.parametrize("net", ["unet", "hrnet"])
def test_each_network_goes_from_training_to_a_measured_json_per_variant(work, net):
    data, model = work / "data", work / "models" / net
    metrics = train(PARAMS, data, model, work / f"curve_{net}.csv", None, "segment", net)
    assert metrics["quality"]["primary"] == "miou" and 0 <= metrics["val_miou"] <= 1
    ckpt = torch.load(model / "checkpoint.pt", weights_only=True)
    assert ckpt["recipe"] == "segment" and ckpt["model_args"]["arch"] == net
    calib = calib_dump(PARAMS, "segment", data, model, work / "calib" / net)
    assert calib["samples"] == 2
    for variant in VARIANTS:
        quant = work / "quant" / net / variant
        q = quantize_stage(PARAMS, variant, model, work / "calib" / net, data, quant, "segment.variants")
        assert q["quality"]["primary"] == "miou"
        c = compile_stage(PARAMS, variant, "cpu", quant, data, work / "compile" / net / variant / "cpu",
                          "segment.variants")
        assert c["agreement"]["max_abs_diff"] <= c["agreement"]["tolerance"]
    figures = work / "reports" / net
    out = recipe_stage(PARAMS, "segment", "eval", {"model": model, "compiled": work / "compile" / net,
                                                   "data": data, "out": work / "metrics" / net, "figures": figures})
    assert set(out["variants"]) == set(VARIANTS)
    tuned = read_json(work / "quant" / net / "inc" / "quant_report.json")["tuning"]
    assert tuned["tolerable_loss"] == 0.5 and [t["fp32_layers"] for t in tuned["trials"]] == [["head"]]
    row = read_json(work / "metrics" / net / "ptq8.json")
    assert (row["model"], row["variant"]) == (net, "ptq8")
    assert set(row["latency_ms"]) == {"64x128", "128x256"} and all(v > 0 for v in row["latency_ms"].values())
    assert all(lo <= row["latency_ms"][size] <= hi for size, (lo, hi) in row["latency_spread_ms"].items())
    assert set(row["scales"]) == set(row["latency_ms"]) and all(0 <= s["miou"] <= 1 for s in row["scales"].values())
    table = (figures / "scales.md").read_text()
    assert all(f"| {net} | {v} | {size} |" in table for v in VARIANTS for size in row["scales"])
    assert set(row["per_class_iou"]) == set(read_json(data / "manifest.json")["classes"])
    assert 0 <= row["miou"] <= 1 and 0 <= row["pixel_acc"] <= 1 and row["params_m"] > 0
    assert row["source"].startswith("measured on ") and "emulated" not in row["source"]
    assert "bf16 emulated" in read_json(work / "metrics" / net / "bf16.json")["source"]
    assert (figures / "per_class_iou.png").stat().st_size > 0
    overlays = sorted(p.name for p in figures.glob("overlay_*.png"))
    assert overlays == sorted(f"overlay_{net}-{v}_scene{k:04d}.png" for v in VARIANTS for k in range(2))
