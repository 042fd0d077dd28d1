"""The regression gate on metric dicts: fires past each threshold, stays quiet inside it."""

from __future__ import annotations

import pytest

from greenpipe.nightly.gate import compare, missing_rows, worse_by
from greenpipe.params import GateRule, load_params

RULES = load_params().nightly.gate  # the thresholds params.yaml ships: 0.1 (primary metric's unit), 5 % fps, 5 % mJ
# The primary metric is whatever the recipe's quality record says; the gate never names it.
Q = {"quality_metric": "score", "quality_unit": "dB", "quality_higher": True}
BASE = {
    "ptq8-local": {"quality": 30.0, **Q, "fps": 100.0, "mj_per_inference": 50.0},
    "fp32-local": {"quality": 31.0, **Q, "fps": 80.0, "mj_per_inference": 60.0},
}


def _with(row: str, **values) -> dict:
    cur = {k: dict(v) for k, v in BASE.items()}
    cur[row].update(values)
    return cur


def test_shipped_thresholds():
    assert RULES["quality"] == GateRule(max_worse=0.1)  # direction: from the quality record
    assert RULES["fps"] == GateRule(better="higher", max_worse=5, relative=True)
    assert RULES["mj_per_inference"] == GateRule(better="lower", max_worse=5, relative=True)


def test_quiet_when_nothing_moved_or_within_limits_or_better():
    assert compare(BASE, BASE, RULES) == []
    assert compare(_with("ptq8-local", quality=29.95, fps=95.5, mj_per_inference=52.4), BASE, RULES) == []
    assert compare(_with("ptq8-local", quality=33.0, fps=150.0, mj_per_inference=10.0), BASE, RULES) == []
    assert compare(_with("ptq8-local", quality=29.9), BASE, RULES) == []  # exactly at the limit passes


@pytest.mark.parametrize(
    ("metric", "value", "worse", "unit"),
    [("quality", 29.8, 0.2, "dB"), ("fps", 94.0, 6.0, "%"), ("mj_per_inference", 53.0, 6.0, "%")],
)
def test_fires_past_each_threshold_naming_row_metric_and_amount(metric, value, worse, unit):
    (r,) = compare(_with("ptq8-local", **{metric: value}), BASE, RULES)
    name = "score" if metric == "quality" else metric  # a quality regression names the recipe's metric
    assert (r.row, r.metric, r.unit) == ("ptq8-local", name, unit)
    assert r.before == BASE["ptq8-local"][metric] and r.after == value
    assert r.worse_by == pytest.approx(worse)
    assert "ptq8-local" in r.describe() and name in r.describe()


def test_quality_direction_comes_from_the_record():
    lower = {"quality_metric": "error", "quality_unit": "%", "quality_higher": False}
    base = {"a-local": {"quality": 10.0, **lower}}
    (r,) = compare({"a-local": {"quality": 10.5, **lower}}, base, RULES)  # lower is better: up is worse
    assert (r.metric, r.unit) == ("error", "%") and r.worse_by == pytest.approx(0.5)
    assert compare({"a-local": {"quality": 9.0, **lower}}, base, RULES) == []


def test_quality_of_another_metric_is_not_compared():
    other = {"quality": 1.0, "quality_metric": "top1", "quality_unit": "%", "quality_higher": True}
    assert compare(_with("ptq8-local", **other), BASE, RULES) == []


def test_worst_first_and_new_or_missing_rows():
    cur = _with("ptq8-local", quality=29.0, fps=94.0)
    cur["qat8-local"] = {"quality": 1.0, **Q}  # new: no baseline, no verdict
    del cur["fp32-local"]
    regs = compare(cur, BASE, RULES)
    assert [r.metric for r in regs] == ["score", "fps"]  # 10x the limit before 1.2x
    assert missing_rows(cur, BASE) == ["fp32-local"]


def test_undefined_changes_are_not_verdicts():
    assert worse_by(0.0, 5.0, GateRule(better="lower", max_worse=5, relative=True)) is None
    assert worse_by(float("nan"), 5.0, RULES["quality"], higher=True) is None
