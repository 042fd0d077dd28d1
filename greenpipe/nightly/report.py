"""The nightly's report: markdown (regressions and failures first) and the variant x device table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from greenpipe.nightly.gate import Regression
from greenpipe.nightly.stages import FAILED, RAN, RESTORED, SKIPPED, UP_TO_DATE, StageOutcome
from greenpipe.report.text import num

TABLE_COLUMNS = ("row", "quality", "quality_metric", "quality_unit", "fps", "p90_ms", "mj_per_inference", "avg_w",
                 "power_measured", "power")


def table(rows: Mapping[str, Mapping[str, object]]) -> list[dict]:
    """One dict per variant x device with the summary columns (None where a figure is absent)."""
    out = []
    for name in sorted(rows):
        r = rows[name]
        variant, _, device = name.rpartition("-")
        out.append({"variant": variant, "device": device} | {k: r.get(k) for k in TABLE_COLUMNS[1:]})
    return out


def _power(row: Mapping[str, object]) -> str:
    """How the row's power figures were obtained: measured, imported (a meter's log) or ESTIMATE."""
    if row.get("power"):
        return _power_cell(str(row["power"]))
    return {True: "measured", False: "**ESTIMATE**"}.get(row.get("power_measured"), "—")  # type: ignore[arg-type]


def _power_cell(power: str | None) -> str:
    return {None: "—", "ESTIMATE": "**ESTIMATE**"}.get(power, power)  # type: ignore[arg-type]


def _quality_heading(tables: Sequence[dict]) -> str:
    """The quality column's heading: the primary metric's name and unit when every row agrees on it."""
    kinds = {(t["quality_metric"], t["quality_unit"]) for t in tables if t["quality_metric"]}
    if len(kinds) == 1:
        name, unit = kinds.pop()
        return f"{name} {unit}".strip()
    return "quality"


def headline(
    failures: Sequence[StageOutcome], regressions: Sequence[Regression], extra_errors: Sequence[str]
) -> str:
    """One line saying whether the night is good, and if not what failed."""
    parts = []
    if failures:
        parts.append(f"{len(failures)} stage(s) failed: {', '.join(f.stage for f in failures)}")
    if regressions:
        parts.append(
            f"{len(regressions)} regression(s): " + ", ".join(f"{r.row} {r.metric}" for r in regressions)
        )
    parts += list(extra_errors)
    return "; ".join(parts) if parts else "all stages succeeded, no regression"


def markdown(
    outcomes: Sequence[StageOutcome],
    rows: Mapping[str, Mapping[str, object]],
    regressions: Sequence[Regression],
    baseline_label: str | None,
    missing: Sequence[str] = (),
    extra_errors: Sequence[str] = (),
    plots: Mapping[str, str] | None = None,
    results_commit: str | None = None,
    not_compared: Sequence[str] = (),
) -> str:
    """The night's report: what went wrong first, then the table, the stages, and links to the plots."""
    failures = [o for o in outcomes if o.status == FAILED]
    skipped = [o for o in outcomes if o.status == SKIPPED]
    lines = ["# greenpipe nightly", "", f"**{headline(failures, regressions, extra_errors)}**", ""]
    against = baseline_label or "no earlier successful nightly (this night becomes the first baseline)"
    lines += [f"Compared with: {against}", ""]
    if regressions:
        lines += [
            "## Regressions",
            "",
            "| variant-device | metric | before | after | worse by | limit | power |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in regressions:
            lines.append(
                f"| {r.row} | {r.metric} | {r.before:.4g} | {r.after:.4g} | {r.worse_by:.3g} {r.unit} "
                f"| {r.limit:g} {r.unit} | {_power_cell(r.power)} |"
            )
        lines.append("")
    if not_compared:
        lines += ["## Not compared", ""] + [f"- {n}" for n in not_compared] + [""]
    if failures or skipped:
        lines += ["## Failed stages", ""]
        for o in failures:
            lines += [
                f"### {o.stage} (after {o.attempts} attempt(s))",
                "",
                "```",
                o.detail.strip()[-3000:],
                "```",
                "",
            ]
        if skipped:
            lines += ["Not run because an upstream stage failed: " + ", ".join(o.stage for o in skipped), ""]
    for e in extra_errors:
        lines += [f"- {e}"]
    if extra_errors:
        lines.append("")
    if missing:
        lines += ["Rows the baseline had and this night lacks: " + ", ".join(missing), ""]
    tables = table(rows)
    lines += [
        "## Variant x device",
        "",
        f"| variant | device | {_quality_heading(tables)} | fps | p90 ms | mJ/inference | W | power |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in tables:
        lines.append(
            f"| {t['variant']} | {t['device']} | {num(t['quality'], '.4g')} | {num(t['fps'], '.1f')} "
            f"| {num(t['p90_ms'])} | {num(t['mj_per_inference'], '.1f')} | {num(t['avg_w'], '.1f')} "
            f"| {_power(t)} |"
        )
    lines.append("")
    counts = {
        s: sum(1 for o in outcomes if o.status == s) for s in (RAN, RESTORED, UP_TO_DATE, FAILED, SKIPPED)
    }
    lines += [
        "## Stages",
        "",
        ", ".join(f"{n} {s}" for s, n in counts.items() if n),
        "",
        "| stage | status | s | attempts |",
        "|---|---|---:|---:|",
    ]
    for o in outcomes:
        lines.append(f"| {o.stage} | {o.status} | {o.seconds:.1f} | {o.attempts} |")
    lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"- [{name}]({url})" for name, url in plots.items()] + [""]
    if results_commit:
        where = f"`git show {results_commit[:10]}:nightly.json`; plots under reports/summary/ there too"
        lines += [f"Figures of this night: results commit `{results_commit}` ({where}).", ""]
    return "\n".join(lines)
