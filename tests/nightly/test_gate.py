"""The regression gate on metric dicts: fires past each threshold, stays quiet inside it."""

from __future__ import annotations

import pytest

from greenpipe.nightly.gate import compare, missing_rows, worse_by
from greenpipe.params import GateRule, load_params

RULES = load_params().nightly.gate  # the thresholds params.yaml ships: 0.1 dB, 5 % fps, 5 % mJ
BASE = {
    "ptq8-local": {"psnr": 30.0, "fps": 100.0, "mj_per_inference": 50.0},
    "fp32-local": {"psnr": 31.0, "fps": 80.0, "mj_per_inference": 60.0},
}


def _with(row: str, **values) -> dict:
    cur = {k: dict(v) for k, v in BASE.items()}
    cur[row].update(values)
    return cur


def test_shipped_thresholds():
    assert RULES["psnr"] == GateRule(better="higher", max_worse=0.1)
    assert RULES["fps"] == GateRule(better="higher", max_worse=5, relative=True)
    assert RULES["mj_per_inference"] == GateRule(better="lower", max_worse=5, relative=True)


def test_quiet_when_nothing_moved_or_within_limits_or_better():
    assert compare(BASE, BASE, RULES) == []
    assert compare(_with("ptq8-local", psnr=29.95, fps=95.5, mj_per_inference=52.4), BASE, RULES) == []
    assert compare(_with("ptq8-local", psnr=33.0, fps=150.0, mj_per_inference=10.0), BASE, RULES) == []
    assert compare(_with("ptq8-local", psnr=29.9), BASE, RULES) == []  # exactly at the limit passes


@pytest.mark.parametrize(
    ("metric", "value", "worse", "unit"),
    [("psnr", 29.8, 0.2, "dB"), ("fps", 94.0, 6.0, "%"), ("mj_per_inference", 53.0, 6.0, "%")],
)
def test_fires_past_each_threshold_naming_row_metric_and_amount(metric, value, worse, unit):
    (r,) = compare(_with("ptq8-local", **{metric: value}), BASE, RULES)
    assert (r.row, r.metric, r.unit) == ("ptq8-local", metric, unit)
    assert r.before == BASE["ptq8-local"][metric] and r.after == value
    assert r.worse_by == pytest.approx(worse)
    assert "ptq8-local" in r.describe() and metric in r.describe()


def test_worst_first_and_new_or_missing_rows():
    cur = _with("ptq8-local", psnr=29.0, fps=94.0)
    cur["qat8-local"] = {"psnr": 1.0}  # new: no baseline, no verdict
    del cur["fp32-local"]
    regs = compare(cur, BASE, RULES)
    assert [r.metric for r in regs] == ["psnr", "fps"]  # 10x the limit before 1.2x
    assert missing_rows(cur, BASE) == ["fp32-local"]


def test_undefined_changes_are_not_verdicts():
    assert worse_by(0.0, 5.0, GateRule(better="lower", max_worse=5, relative=True)) is None
    assert worse_by(float("nan"), 5.0, RULES["psnr"]) is None
