"""Variant inc on the segment recipe: the accuracy gate scores each candidate and rejects a broken one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from greenpipe.quant import quantize_variant
from greenpipe.quant.context import QuantContext, quant_context
from greenpipe.recipes.base import model_from_checkpoint
from greenpipe.recipes.segment.ingest import ingest
from greenpipe.recipes.segment.data import split_samples
from greenpipe.recipes.segment import to_input
from greenpipe.train import train
from tests.recipes.segment.fixtures import segment_params
from tests.recipes.segment.test_data import photos  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def test_a_badly_calibrated_candidate_fails_the_miou_gate_and_the_float_one_passes(photos, tmp_path):  # noqa: F811
    # Long enough for the float model to beat a constant prediction, so that a clipped int8 candidate loses;
    # fp32 on every host (auto would train in bf16 on some CPUs only, and reach another model).
    params = segment_params(train={"epochs": 1, "steps_per_epoch": 300, "batch_size": 4, "crop": [64, 128],
                                   "lr": 0.003, "precision": "fp32"},
                            data={"size": [64, 128], "train_scenes": 8, "val_scenes": 3})
    ingest(params, {"photos": photos, "out": tmp_path / "data"})
    train(params, tmp_path / "data", tmp_path / "model", tmp_path / "curve.csv", None, "segment", "unet")
    model, _ = model_from_checkpoint(tmp_path / "model" / "checkpoint.pt")
    convs = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    # Near-constant calibration images give tiny activation scales: the all-int8 candidate clips everything.
    calib = [torch.from_numpy(to_input(s.load()[0], 4)) * 0.005 for s in split_samples(tmp_path / "data", "train")]
    config = {"max_trials": 2, "act_algo": ["minmax"], "fp32_layers": [[], convs], "tolerable_loss": 0.01}
    ctx = QuantContext(data=Path(tmp_path / "data"), seed=0, recipe="segment", multiple=4)
    with quant_context(ctx):
        result = quantize_variant("inc", {"inc": config}, model, calib)
    trials = result.report["tuning"]["trials"]
    # the premise: a constant prediction scores about 0.03 mIoU on these scenes
    assert result.report["tuning"]["fp32_score"] > 0.05
    assert [t["passed"] for t in trials] == [False, True]
    # the gate scored the candidate itself: the broken one's mIoU is below the float model's
    assert trials[0]["score"] < result.report["tuning"]["target_score"] <= trials[1]["score"]
    assert trials[1]["score"] == result.report["tuning"]["fp32_score"]
