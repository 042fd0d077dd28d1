"""Regression gate: this night's figures per variant x device against the last successful nightly's.

    regressions = compare(current, baseline, rules)   # rules: params.nightly.gate

``current`` and ``baseline`` map ``"variant-device"`` to ``{metric: value}`` (see
:func:`greenpipe.nightly.results.collect_rows`). A rule says which way is better and how far the
metric may move the other way: in its own unit or, when relative, in percent of the baseline (fps,
mJ/inference). The rule ``quality`` is the recipe's primary metric: its direction and unit come from
the row's quality record (``quality_higher``, ``quality_unit``), and a night whose primary metric is
another one than the baseline's is not compared.
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

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.row} {self.metric}: {self.before:.4g} -> {self.after:.4g} "
            f"(worse by {self.worse_by:.3g} {self.unit}, limit {self.limit:g} {self.unit})"
        ).replace("  ", " ")


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
            higher, unit, name = None, UNITS.get(metric, ""), metric
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
                found.append(Regression(row, name, float(before), float(after), w, rule.max_worse, unit))
    return sorted(found, key=lambda r: -(r.worse_by / r.limit if r.limit else math.inf))


def missing_rows(current: Mapping[str, object], baseline: Mapping[str, object]) -> list[str]:
    """Rows the baseline had and this night lacks (a failed or removed variant / device)."""
    return sorted(set(baseline) - set(current))
