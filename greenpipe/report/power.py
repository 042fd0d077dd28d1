"""Power soak results in the report: device x variant table, time-series plot, savings projection.

    rows = collect_soak(Path("metrics"))          # one SoakRow per **/soak/<variant>-<device>.json
    text = power_markdown(rows)                    # the summary.md section
    soak_timeseries_plot(rows, Path("reports/summary/soak_timeseries.png"))
    projection = savings(a, b)                     # kWh saved by a over b at 24/7 equal throughput, or refused

Every row carries its meter (name, scope, measured or not) and the meter's own
description; rows from the ``estimate`` meter say ESTIMATE next to every
figure, rows from a wall meter's log say "imported" (the figures were read
back from a log another device wrote, not measured by greenpipe).
:func:`savings` computes only between like meters: both rows from a meter
(not estimated), meters of the same scope (card vs card, wall vs wall), from
complete soaks; otherwise it refuses and says why.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from greenpipe.io import read_json
from greenpipe.power.base import provenance
from greenpipe.report.text import num, number, source_keys

HOURS = {"day": 24.0, "week": 24.0 * 7, "year": 24.0 * 365}


@dataclass(frozen=True)
class SoakRow:
    variant: str
    device: str
    fps: float | None
    fps_std: float | None  # across windows
    avg_w: float | None
    max_w: float | None
    idle_w: float | None
    dynamic_w: float | None
    mj_per_inference: float | None
    inferences_per_j: float | None
    meter: str
    scope: str
    measured: bool
    what: str  # the meter's own description (starts with ESTIMATE... for the estimate meter)
    partial: bool = False
    resumed: bool = False
    source: str = "unknown"  # where the soak ran and what its power is ("soak on <host>, <runtime>; power: ...")
    timeline: list = field(default_factory=list, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.variant}@{self.device}"


def row_from_metrics(d: dict, stem: str = "") -> SoakRow:
    meter = d.get("meter") or {}
    return SoakRow(
        variant=d.get("variant") or stem.rsplit("-", 1)[0],
        device=d.get("device_name") or stem.rsplit("-", 1)[-1],
        fps=number(d, "fps"), fps_std=number(d, "fps_window_std"), avg_w=number(d, "avg_w"), max_w=number(d, "max_w"),
        idle_w=number(d, "idle_w"), dynamic_w=number(d, "dynamic_w"), mj_per_inference=number(d, "mj_per_inference"),
        inferences_per_j=number(d, "inferences_per_j"),
        meter=str(meter.get("name", "unknown")), scope=str(meter.get("scope", "unknown")),
        measured=meter.get("measured") is True, what=str(meter.get("what", "unknown meter")),
        source=str(d.get("source", "unknown")),
        partial=bool(d.get("partial")), resumed=bool(d.get("resumed")), timeline=list(d.get("timeline") or []),
    )


def collect_soak(metrics: Path) -> list[SoakRow]:
    """One row per soak stage's metrics, ``soak/<variant>-<device>.json`` at any depth under ``metrics``."""
    return [row_from_metrics(read_json(p), p.stem) for p in sorted(Path(metrics).glob("**/soak/*.json"))]


# -- savings projection --------------------------------------------------------------------------

@dataclass(frozen=True)
class Savings:
    """kWh that ``a`` saves over ``b`` serving the same load 24/7, or why it was not computed."""

    a: str
    b: str
    refused: str | None = None  # the reason, when not computed
    throughput_fps: float | None = None
    watts_a: float | None = None  # at that throughput
    watts_b: float | None = None
    kwh: dict[str, float] = field(default_factory=dict)  # per day / week / year; negative: a uses more


def power_at(row: SoakRow, fps: float) -> float:
    """Watts of ``row``'s device serving ``fps`` (<= its soak fps): idle plus dynamic power scaled by load.

    P(T) = idle + (P_soak - idle) x T / fps_soak: the device idles between
    inferences at the lower load; without an idle figure P_soak is used as is
    (an upper bound).
    """
    if row.idle_w is None:
        return row.avg_w
    return row.idle_w + (row.avg_w - row.idle_w) * fps / row.fps


def savings(a: SoakRow, b: SoakRow, throughput_fps: float | None = None) -> Savings:
    """Energy ``a`` saves over ``b`` at 24/7 load at equal throughput (default: the slower one's fps).

    Refuses unless both rows are measured (no estimate), by meters of the
    same scope (card vs card, package vs package, wall vs wall: a card meter
    omits the host a wall meter includes), from complete soaks with power.
    """
    reasons = []
    for r in (a, b):
        if not r.measured:
            reasons.append(f"{r.label} was not measured: its power comes from the {r.meter} meter, "
                           f"{r.what.split(':')[0]}")
        if r.partial:
            reasons.append(f"{r.label} is a partial soak")
        if r.avg_w is None or not r.fps:
            reasons.append(f"{r.label} has no power or throughput figure")
    if a.scope != b.scope:
        reasons.append(f"the meters measure different things ({a.label}: {a.meter}, scope {a.scope}; "
                       f"{b.label}: {b.meter}, scope {b.scope}), so their watts do not compare")
    if reasons:
        return Savings(a.label, b.label, refused="; ".join(reasons))
    fps = throughput_fps if throughput_fps is not None else min(a.fps, b.fps)
    if fps > min(a.fps, b.fps):
        return Savings(a.label, b.label, refused=f"{fps:g} fps is more than {a.label if a.fps < b.fps else b.label} "
                                                 "sustained in its soak")
    wa, wb = power_at(a, fps), power_at(b, fps)
    kwh = {span: (wb - wa) * hours / 1000 for span, hours in HOURS.items()}
    return Savings(a.label, b.label, throughput_fps=fps, watts_a=wa, watts_b=wb, kwh=kwh)


# -- markdown ------------------------------------------------------------------------------------

def power_markdown(rows: list[SoakRow]) -> str:
    """The power soak section of summary.md ("" when there are no soak results)."""
    if not rows:
        return ""
    keys = source_keys([r.source for r in rows], "s")
    lines = ["## Power soak (energy per inference)", ""]
    lines += [("| variant | device | fps | fps std | W avg | W max | W dynamic | mJ/inference | inferences/J "
               "| meter | power is | source |"),
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.device, r.variant != "fp32", r.variant)):
        kind = {"ESTIMATE": "**ESTIMATE**, not a measurement",
                "imported": "imported (the wall meter's own log)"}.get(provenance(r.meter, r.measured), "measured")
        mark = "" if r.measured else " (est.)"
        notes = "".join([" partial" if r.partial else "", " resumed" if r.resumed else ""])
        lines.append(
            f"| {r.variant} | {r.device}{notes} | {num(r.fps, '.1f')} | {num(r.fps_std, '.2f')} | {num(r.avg_w, '.1f')}{mark} "
            f"| {num(r.max_w, '.1f')}{mark} | {num(r.dynamic_w, '.1f')}{mark} | {num(r.mj_per_inference, '.2f')}{mark} "
            f"| {num(r.inferences_per_j, '.2f')}{mark} | {r.meter} ({r.scope}) | {kind} | {keys[r.source]} |"
        )
    lines += ["", "Where the soak figures come from (the source column names the line):", ""]
    lines += [f"- {key} {src}" for src, key in keys.items()]
    lines += ["", "Meters:", ""]
    for meter, what in sorted({(r.meter, r.what) for r in rows}):
        lines.append(f"- {meter}: {what}")
    lines += ["", ("Savings at 24/7 load, equal throughput (the slower one's fps), only between like meters "
                   "(no estimate; card vs card, wall vs wall):"), ""]
    pairs = list(itertools.combinations(sorted(rows, key=lambda r: r.label), 2))
    estimated = sorted(r.label for r in rows if not r.measured)
    if not pairs:
        lines.append("- not computed: one soak result only; a projection needs two")
    elif len(estimated) >= len(rows) - 1:  # no pair has two measured results: one line says why
        lines.append(
            f"- **not computed** for any pair: power of {', '.join(estimated)} comes from an estimate, "
            "not a meter; a projection needs two results measured by meters of the same scope"
        )
        pairs = []
    for x, y in pairs:
        a, b = (x, y) if (x.mj_per_inference or math.inf) <= (y.mj_per_inference or math.inf) else (y, x)
        s = savings(a, b)
        if s.refused:
            lines.append(f"- {s.a} vs {s.b}: **not computed**: {s.refused}")
        else:
            lines.append(
                f"- {s.a} saves over {s.b} at {s.throughput_fps:.1f} fps ({s.watts_a:.1f} W vs {s.watts_b:.1f} W): "
                f"{s.kwh['day']:.2f} kWh/day, {s.kwh['week']:.1f} kWh/week, {s.kwh['year']:.0f} kWh/year"
            )
    lines += ["", ("- soak: idle baseline, warm-up (excluded), then back-to-back runs on one fixed input; power and "
                   "fps from the same windows; plot: soak_timeseries.png"), ""]
    return "\n".join(lines)


# -- plot ----------------------------------------------------------------------------------------

def soak_timeseries_plot(rows: list[SoakRow], path: Path) -> None:
    """Power and fps per window over time, one column per device x variant, warm-up shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.timeline] or rows
    n = max(len(rows), 1)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 5.2), dpi=110, sharex="col", squeeze=False)
    for col, r in enumerate(rows):
        ax_w, ax_f = axes[0][col], axes[1][col]
        if r.timeline:
            t0 = r.timeline[0]["t_wall_start"]
            for w in r.timeline:
                x0 = w["t_wall_start"] - t0
                if w["phase"] == "warmup":
                    for ax in (ax_w, ax_f):
                        ax.axvspan(x0, x0 + w["seconds"], color="orange", alpha=0.15, lw=0)
            pts = [(w["t_wall_start"] - t0 + w["seconds"] / 2, w) for w in r.timeline]
            ax_w.plot([x for x, w in pts if w["avg_w"] is not None],
                      [w["avg_w"] for _, w in pts if w["avg_w"] is not None], "o-", ms=3, label="mean W")
            ax_w.plot([x for x, w in pts if w["max_w"] is not None],
                      [w["max_w"] for _, w in pts if w["max_w"] is not None], ".", ms=3, color="gray",
                      label="max W")
            ax_f.plot([x for x, _ in pts], [w["fps"] for _, w in pts], "o-", ms=3, color="tab:green")
        if r.idle_w is not None:
            ax_w.axhline(r.idle_w, ls=":", color="gray", lw=1, label="idle")
        title = f"{r.label}{' (partial)' if r.partial else ''}"
        ax_w.set_title(title, fontsize=9)
        ax_w.set_ylabel("W (ESTIMATE)" if not r.measured else f"W ({r.meter}, {r.scope})", fontsize=8)
        ax_f.set_ylabel("fps per window", fontsize=8)
        ax_f.set_xlabel("s since soak start (warm-up shaded)", fontsize=8)
        if not r.measured:
            ax_w.text(0.5, 0.02, "ESTIMATE, not a measurement", transform=ax_w.transAxes, ha="center",
                      fontsize=8, color="tab:red")
        ax_w.legend(fontsize=7, loc="best")
        for ax in (ax_w, ax_f):
            ax.set_ylim(bottom=0)  # from zero: window-to-window noise should not look like a trend
            ax.grid(alpha=0.3)
    fig.suptitle("Power soak: power and throughput per window", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
