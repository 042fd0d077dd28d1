"""Regression gate: this night's figures per variant x device against the last successful nightly's.

    regressions = compare(current, baseline, rules)   # rules: params.nightly.gate

``current`` and ``baseline`` map ``"variant-device"`` to ``{metric: value}`` (see
:func:`greenpipe.nightly.results.collect_rows`). A rule says which way is better and how far the
metric may move the other way: in its own unit or, when relative, in percent of the baseline (fps,
mJ/inference). The rule ``quality`` is the recipe's primary metric: its direction and unit come from
the row's quality record (``quality_higher``, ``quality_unit``), and a night whose primary metric is
another one than the baseline's is not compared.

Energy and power (:data:`ENERGY`) are compared only between like meters: the same meter, of the same
scope, on both nights. A night measured with another meter than the baseline's (RAPL then a wall
meter, a measurement then an estimate) is not gated on those metrics; :func:`unlike_meters` says
which rows were refused and why, and the report prints it. A regression in energy says how its
figures were obtained (``power``: measured, imported or ESTIMATE).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from greenpipe.params import GateRule

# The rule name that stands for the recipe's primary metric (its quality record).
QUALITY = "quality"
# Units shown in reports; absolute rules use the metric's own unit.
UNITS = {"fps": "fps", "mj_per_inference": "mJ", "p90_ms": "ms"}
# Metrics a power meter produced: compared only when both nights used the same meter.
ENERGY = ("mj_per_inference", "avg_w")


@dataclass(frozen=True)
class Regression:
    """One metric of one variant x device that got worse by more than its rule allows."""

    row: str  # "variant-device"
    metric: str
    before: float  # the baseline night's value
    after: float  # this night's value
    worse_by: float  # how much worse, in `unit`
    limit: float  # the rule's max_worse, in `unit`
    unit: str  # "%" for relative rules, else the metric's unit
    power: str | None = None  # energy metrics: how both nights' figures were obtained (measured / ESTIMATE ...)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        power = f", power {self.power}" if self.power else ""
        return (
            f"{self.row} {self.metric}: {self.before:.4g} -> {self.after:.4g} "
            f"(worse by {self.worse_by:.3g} {self.unit}, limit {self.limit:g} {self.unit}{power})"
        ).replace("  ", " ")


def _meter(row: Mapping[str, object]) -> tuple[object, object]:
    return row.get("meter"), row.get("meter_scope")


def meter_mismatch(row: str, before: Mapping[str, object], after: Mapping[str, object]) -> str | None:
    """Why ``row``'s energy figures of two nights do not compare (unlike or unknown meters), or None."""
    (m0, s0), (m1, s1) = _meter(before), _meter(after)
    if m0 is None or m1 is None:
        which = "the baseline" if m0 is None else "this night"
        return (f"{row}: energy not compared: {which} does not record which meter measured it "
                "(a soak from before meters were recorded); rerun its soak to compare")
    if (m0, s0) != (m1, s1):
        return (f"{row}: energy not compared: unlike meters, {m0} ({s0}) on the baseline vs {m1} ({s1}) "
                "this night; their joules do not compare. Compare nights measured with the same meter")
    return None


def unlike_meters(
    current: Mapping[str, Mapping[str, object]],
    baseline: Mapping[str, Mapping[str, object]],
    rules: Mapping[str, GateRule],
) -> list[str]:
    """One message per row whose gated energy metrics were refused because the two nights' meters differ."""
    out = []
    for row in sorted(current):
        before = baseline.get(row)
        if before is None or not any(m in rules and m in current[row] and m in before for m in ENERGY):
            continue
        why = meter_mismatch(row, before, current[row])
        if why:
            out.append(why)
    return out


def worse_by(before: float, after: float, rule: GateRule, higher: bool | None = None) -> float | None:
    """How much worse ``after`` is than ``before`` under ``rule`` (negative = better); None if undefined.

    ``higher`` (whether higher is better) overrides the rule's ``better``; one of them must say.
    """
    if not (math.isfinite(before) and math.isfinite(after)):
        return None
    if higher is None:
        higher = rule.better == "higher"
    delta = before - after if higher else after - before
    if not rule.relative:
        return delta
    if before == 0:
        return None
    return 100.0 * delta / abs(before)


def compare(
    current: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    rules: Mapping[str, GateRule],
) -> list[Regression]:
    """Every (row, metric) of ``current`` that is worse than ``baseline`` past its rule, worst first."""
    found = []
    for row in sorted(current):
        before_row = baseline.get(row)
        if before_row is None:  # a new variant or device: nothing to compare with yet
            continue
        for metric, rule in rules.items():
            before, after = before_row.get(metric), current[row].get(metric)
            if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
                continue
            higher, unit, name, power = None, UNITS.get(metric, ""), metric, None
            if metric in ENERGY:  # like meters only (unlike_meters says which rows were refused)
                if meter_mismatch(row, before_row, current[row]):
                    continue
                power = str(current[row].get("power", "unknown"))
            if metric == QUALITY:  # the recipe's primary metric: its record says which way is better
                if before_row.get("quality_metric") != current[row].get("quality_metric"):
                    continue
                higher = current[row].get("quality_higher")
                unit, name = current[row].get("quality_unit", ""), str(current[row].get("quality_metric"))
                if higher is None and rule.better is None:
                    continue
            w = worse_by(float(before), float(after), rule, higher)
            # A hair of tolerance: a value exactly at the limit passes, whatever the float rounding.
            if w is not None and w > rule.max_worse + 1e-9:
                unit = "%" if rule.relative else unit
                found.append(Regression(row, name, float(before), float(after), w, rule.max_worse, unit, power))
    return sorted(found, key=lambda r: -(r.worse_by / r.limit if r.limit else math.inf))


def missing_rows(current: Mapping[str, object], baseline: Mapping[str, object]) -> list[str]:
    """Rows the baseline had and this night lacks (a failed or removed variant / device)."""
    return sorted(set(baseline) - set(current))
