"""The regression gate on metric dicts: fires past each threshold, stays quiet inside it."""

from __future__ import annotations

import pytest

from greenpipe.nightly.gate import compare, missing_rows, unlike_meters, worse_by
from greenpipe.params import GateRule, load_params

RULES = load_params().nightly.gate  # the thresholds params.yaml ships: 0.1 (primary metric's unit), 5 % fps, 5 % mJ
# The primary metric is whatever the recipe's quality record says; the gate never names it.
Q = {"quality_metric": "score", "quality_unit": "dB", "quality_higher": True}
M = {"meter": "rapl", "meter_scope": "package", "power": "measured"}  # the soak's meter, both nights
BASE = {
    "ptq8-local": {"quality": 30.0, **Q, "fps": 100.0, "mj_per_inference": 50.0, **M},
    "fp32-local": {"quality": 31.0, **Q, "fps": 80.0, "mj_per_inference": 60.0, **M},
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


def test_energy_of_unlike_meters_is_refused_with_the_reason():
    # Baseline measured by RAPL; tonight a wall meter (another scope), then the estimate: 40 % "worse" mJ.
    for meter, scope, power in [("wallmeter", "system", "imported"), ("estimate", "estimate", "ESTIMATE")]:
        cur = _with("ptq8-local", mj_per_inference=70.0, fps=99.0, meter=meter, meter_scope=scope, power=power)
        assert compare(cur, BASE, RULES) == []  # not a regression: not compared at all
        (why,) = unlike_meters(cur, BASE, RULES)
        assert why == (f"ptq8-local: energy not compared: unlike meters, rapl (package) on the baseline vs "
                       f"{meter} ({scope}) this night; their joules do not compare. Compare nights measured "
                       "with the same meter")
    assert unlike_meters(BASE, BASE, RULES) == []


def test_energy_without_a_recorded_meter_is_refused():
    base = {"ptq8-local": {k: v for k, v in BASE["ptq8-local"].items() if k not in M}}
    cur = _with("ptq8-local", mj_per_inference=70.0)
    assert [r.metric for r in compare(cur, base, RULES)] == []
    (why,) = unlike_meters(cur, base, RULES)
    assert "the baseline does not record which meter measured it" in why


def test_an_energy_regression_between_estimates_says_estimate():
    est = {"meter": "estimate", "meter_scope": "estimate", "power": "ESTIMATE"}
    base = {"ptq8-local": {**BASE["ptq8-local"], **est}}
    (r,) = compare({"ptq8-local": {**base["ptq8-local"], "mj_per_inference": 60.0}}, base, RULES)
    assert r.power == "ESTIMATE" and r.describe().endswith("limit 5 %, power ESTIMATE)")


def test_report_marks_estimate_rows_and_lists_what_was_not_compared():
    from greenpipe.nightly.report import markdown

    est = {"meter": "estimate", "meter_scope": "estimate", "power": "ESTIMATE", "power_measured": False}
    base = {"ptq8-local": {**BASE["ptq8-local"], **est}, "fp32-local": BASE["fp32-local"]}
    cur = {"ptq8-local": {**base["ptq8-local"], "mj_per_inference": 60.0},
           "fp32-local": {**BASE["fp32-local"], "meter": "wallmeter", "meter_scope": "system", "power": "imported"}}
    regressions, refused = compare(cur, base, RULES), unlike_meters(cur, base, RULES)
    md = markdown([], cur, regressions, "nightly X", not_compared=refused)
    assert "| ptq8-local | mj_per_inference | 50 | 60 | 20 % | 5 % | **ESTIMATE** |" in md
    assert "## Not compared" in md and f"- {refused[0]}" in md and refused[0].startswith("fp32-local:")
    assert "| ptq8 | local |" in md and md.split("| ptq8 | local |")[1].splitlines()[0].endswith("| **ESTIMATE** |")
    assert md.split("| fp32 | local |")[1].splitlines()[0].endswith("| imported |")
