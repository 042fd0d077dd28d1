"""Build the variant x device summary from the stages' metrics files.

Every figure keeps its provenance: the deploy stage records on which device
(and how) it measured; the table carries that text through to the markdown.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from greenpipe.bench.loadgen import MIN_REPEATS_FOR_SPREAD, status
from greenpipe.io import read_json
from greenpipe.recipes.base import Quality, Recipe, Reference, metric_of
from greenpipe.report.quant import bits_label
from greenpipe.report.text import num, number, source_keys


@dataclass(frozen=True)
class Row:
    """One deployed artifact on one device: the recipe's quality figures, speed, size, numerics, provenance."""

    variant: str
    device: str
    values: dict[str, float]  # the recipe's metrics by name (Quality.values)
    primary: str  # which of them the gate and the drop column use
    drop: float | None  # how much worse than fp32 on the same device, in the primary metric's unit
    p50_ms: float | None
    p90_ms: float | None
    fps: float | None
    model_mb: float | None
    loadgen: str  # the LoadGen verdict as reported (greenpipe.bench.loadgen.verdict)
    agreement_max_diff: float | None  # deployed artifact vs fake-quant model
    dpu_numerics: bool | None
    source: str
    bits: str | None = None  # 'w8a8', 'w4a8' (greenpipe.report.quant.bits_label)
    deployable_to_dpu: bool | None = None  # the Vitis AI compiler can take it
    numerics: str | None = None  # a variant's own label for its numerics ('Intel x86 path (INC)')
    passes: int = 1  # > 1: the artifact run as a self-ensemble over this many flips / rotations
    input_shape: tuple[int, ...] | None = None  # one LoadGen query
    reference: bool = False  # the float variant the drop is measured against
    repeats: int = 1  # LoadGen runs the latency and fps figures are the median of
    spread: dict[str, list[float]] | None = None  # {figure: [min, max]} over those runs
    gmacs: float | None = None  # multiply-accumulates per query, counted from the artifact (x passes)

    @property
    def label(self) -> str:
        """The variant as the table and the plot name it: ``ptq8``, or ``ptq8 x8`` for its self-ensemble."""
        return self.variant if self.passes == 1 else f"{self.variant} x{self.passes}"

    @property
    def quality(self) -> float:
        """The primary metric's value (NaN when the row has none)."""
        return float(self.values.get(self.primary, math.nan))

    def get(self, name: str) -> float | None:
        """A figure by name: a metric of the recipe, or a field (``p90_ms``, ``fps``, ...)."""
        if name in self.values:
            return self.values[name]
        v = getattr(self, name, None)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def to_dict(self) -> dict:
        """Flat: the recipe's metrics become columns of their own (table.csv, a DVC plot source)."""
        d = asdict(self)
        values = d.pop("values")
        return {"variant": d.pop("variant"), "device": d.pop("device"), **values, **d}


def _quality(run: dict, recipe: Recipe) -> tuple[dict[str, float], str]:
    """The run's metric values and primary metric: its ``quality`` record, else the recipe's metrics by name."""
    if isinstance(run.get("quality"), dict):
        q = Quality.from_dict(run["quality"])
        return dict(q.values), q.primary
    return {m.name: float(run[m.name]) for m in recipe.metrics if number(run, m.name) is not None}, recipe.metrics[0].name


def deploy_files(metrics: Path) -> list[Path]:
    """Every deploy stage's metrics under ``metrics``: ``deploy/<variant>-<device>.json`` at any depth
    (``metrics/deploy/``, ``metrics/video/deploy/``, ...)."""
    return sorted(Path(metrics).glob("**/deploy/*.json"))


def recipes_deployed(metrics: Path, default: str) -> list[str]:
    """The recipes with deploy metrics under ``metrics``, ``default`` first (files without a recipe are its)."""
    found = {read_json(p).get("recipe") or default for p in deploy_files(metrics)}
    return [default] + sorted(found - {default})


def _is_float(quant: dict) -> bool:
    """Whether a quantize stage's metrics describe a float model (32-bit weights): the drop's reference."""
    bits = quant.get("bits")
    return isinstance(bits, dict) and bits.get("weights") == 32


def collect(metrics: Path, recipe: Recipe, default: str | None = None) -> list[Row]:
    """One row per deploy metrics file of ``recipe`` (and one per self-ensemble run), the drop filled in.

    A file without a ``recipe`` field counts as ``default``'s (the pipeline's ``base.recipe``; None:
    ``recipe``'s). Each variant's quantize and compile metrics sit beside its deploy folder
    (``../quantize/<variant>.json``, ``../compile/<variant>-<target>.json``). The drop is against the
    float variant (32-bit weights) of the same model (the quantize metrics' ``model``) on the same
    device, like with like: a self-ensemble against the float variant's self-ensemble.
    """
    runs = []
    for path in deploy_files(metrics):
        d = read_json(path)
        if (d.get("recipe") or default or recipe.name) != recipe.name:
            continue
        variant = d.get("variant") or path.stem.rsplit("-", 1)[0]
        device = d.get("device_name") or path.stem.rsplit("-", 1)[-1]
        target = d.get("target", "cpu")
        comp_path = path.parent.parent / "compile" / f"{variant}-{target}.json"
        comp = read_json(comp_path) if comp_path.exists() else {}
        quant_path = path.parent.parent / "quantize" / f"{variant}.json"
        quant = read_json(quant_path) if quant_path.exists() else {}
        agreement = comp.get("agreement", {}) if isinstance(comp.get("agreement"), dict) else {}
        runs.append((variant, device, 1, d, d, agreement, quant))
        ensemble = d.get("self_ensemble")
        if isinstance(ensemble, dict):
            runs.append((variant, device, int(ensemble.get("passes", 1)), ensemble, d, agreement, quant))
    scored = [(run, *_quality(run[3], recipe)) for run in runs]
    # keyed by the float model too: a recipe with several networks compares each with its own float variant
    fp32 = {(dev, n, quant.get("model")): (values[primary], primary)
            for (v, dev, n, _, _, _, quant), values, primary in scored if _is_float(quant) and primary in values}
    rows = []
    for (variant, device, passes, r, d, agreement, quant), values, primary in scored:
        base = fp32.get((device, passes, quant.get("model")))
        drop = None
        if base is not None and base[1] == primary and primary in values:
            drop = Quality(primary, values, metric_of(recipe, primary).higher_is_better).worse_by(base[0])
        rows.append(
            Row(
                variant=variant,
                device=device,
                values=values,
                primary=primary,
                drop=drop,
                p50_ms=number(r, "p50_ms"),
                p90_ms=number(r, "p90_ms"),
                fps=number(r, "fps"),
                model_mb=number(d, "model_mb"),
                loadgen=_loadgen_cell(r),
                agreement_max_diff=number(agreement, "max_abs_diff"),
                dpu_numerics=quant.get("dpu_numerics"),
                source=str(r.get("source", "unknown")),
                bits=bits_label(quant.get("bits")),
                deployable_to_dpu=quant.get("deployable_to_dpu"),
                numerics=quant.get("numerics"),
                passes=passes,
                input_shape=tuple(d["input_shape"]) if isinstance(d.get("input_shape"), list) else None,
                reference=_is_float(quant),
                repeats=int(r.get("repeats", 1)),
                spread=r.get("spread") if isinstance(r.get("spread"), dict) else None,
                gmacs=None if number(d, "gmacs") is None else number(d, "gmacs") * passes,
            )
        )
    return rows


def _range(r: Row, figure: str) -> tuple[float, float] | None:
    s = (r.spread or {}).get(figure)
    return (float(s[0]), float(s[1])) if isinstance(s, list) and len(s) == 2 else None


def _with_spread(r: Row, figure: str, fmt: str = ".2f") -> str:
    """``14.10 (13.90-14.50)``: the median over the repeats and its min - max; the bare figure without repeats."""
    spread = _range(r, figure)
    if spread is None or r.repeats < 2:
        return num(r.get(figure), fmt)
    return f"{num(r.get(figure), fmt)} ({spread[0]:{fmt}}–{spread[1]:{fmt}})"


def judge(a: Row, b: Row, figure: str) -> str | None:
    """Whether ``a`` and ``b`` differ in ``figure`` (``p90_ms``, ``fps``) beyond the spread of their repeats.

    Overlapping min - max ranges are "no significant difference"; with fewer than
    MIN_REPEATS_FOR_SPREAD repeats on either side no difference is judged. None when a figure is missing.
    """
    va, vb = a.get(figure), b.get(figure)
    if va is None or vb is None:
        return None
    ra, rb = _range(a, figure), _range(b, figure)
    if min(a.repeats, b.repeats) < MIN_REPEATS_FOR_SPREAD or ra is None or rb is None:
        return f"not judged (fewer than {MIN_REPEATS_FOR_SPREAD} repeats)"
    if ra[0] <= rb[1] and rb[0] <= ra[1]:
        return "no significant difference"
    lower_is_better = figure != "fps"
    a_better = (va < vb) == lower_is_better
    best, other = (a, b) if a_better else (b, a)
    ratio = max(va, vb) / min(va, vb) if min(va, vb) > 0 else math.inf
    return f"{best.label} {ratio:.2f}x {'faster' if figure == 'fps' else 'lower'} than {other.label}"


def differences(rows: list[Row]) -> list[str]:
    """One line per pair of rows on the same device and passes: p90 latency and fps, judged against the spread."""
    lines = []
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in sorted(rows, key=lambda r: (r.device, r.passes, not r.reference, r.variant)):
        groups.setdefault((r.device, r.passes), []).append(r)
    for (device, _), group in groups.items():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                parts = []
                for figure, name, fmt in (("p90_ms", "p90 ms", ".2f"), ("fps", "fps", ".1f")):
                    verdict = judge(a, b, figure)
                    if verdict is not None:
                        parts.append(f"{name} {_with_spread(a, figure, fmt)} vs {_with_spread(b, figure, fmt)}: {verdict}")
                if parts:
                    lines.append(f"- {a.label} vs {b.label} ({device}): " + "; ".join(parts))
    return lines


def _loadgen_cell(r: dict) -> str:
    """The LoadGen column: the reported verdict; a file from before durations were recorded says so."""
    cell = status(r.get("loadgen_validity"))
    if "loadgen_duration_s" not in r and cell == "VALID":
        return "LoadGen VALID; duration not recorded, so not shown to meet the rules' 600 s"
    return cell


def _yes_no(v: bool | None) -> str:
    return "—" if v is None else ("yes" if v else "no")


def _numerics(r: Row) -> str:
    """The DPU-numerics cell: yes / no, plus the variant's own label (``no: Intel x86 path (INC)``)."""
    return _yes_no(r.dpu_numerics) + (f": {r.numerics}" if r.numerics else "")


@dataclass(frozen=True)
class Section:
    """One recipe's part of the summary: its rows and the other methods scored on its val data."""

    recipe: Recipe
    rows: list[Row]
    references: list[Reference] = field(default_factory=list)
    findings: str = ""  # the recipe's own markdown after its table (recipe_findings)


def recipe_findings(recipe: Recipe, metrics: Path) -> str:
    """The recipe's optional ``report_markdown(metrics)``: its own tables for its summary section ("" if none)."""
    own = getattr(recipe, "report_markdown", None)
    return own(Path(metrics)) if callable(own) else ""


def _table(sec: Section, keys: dict[str, str]) -> list[str]:
    shown = [m for m in sec.recipe.metrics if m.column]
    primary = sec.recipe.metrics[0]
    lines = [
        "| variant | device | " + " | ".join(m.heading() for m in shown)
        + f" | drop vs float {primary.unit} | p90 ms | fps | GMACs | model MB | DPU numerics | bits "
        "| deployable to DPU | LoadGen | source |".replace("  ", " "),
        "|---|---|" + "---:|" * len(shown) + "---:|---:|---:|---:|---:|:-:|:-:|:-:|:-:|---|",
    ]
    for r in sorted(sec.rows, key=lambda r: (r.device, r.passes, not r.reference, r.variant)):
        cells = " | ".join(m.format(r.values.get(m.name)) for m in shown)
        lines.append(
            f"| {r.label} | {r.device} | {cells} | {num(r.drop, '+' + primary.fmt)} "
            f"| {_with_spread(r, 'p90_ms')} | {_with_spread(r, 'fps', '.1f')} | {num(r.gmacs, '.3f')} | {num(r.model_mb, '.3f')} "
            f"| {_numerics(r)} "
            f"| {r.bits or '—'} | {_yes_no(r.deployable_to_dpu)} | {r.loadgen} | {keys[r.source]} |"
        )
    lines.append("")
    diffs = differences(sec.rows)
    if diffs:
        lines += [f"Speed differences (median over the LoadGen repeats, min–max in brackets; ranges that overlap "
                  "are no significant difference):", ""] + diffs + [""]
    if sec.references:
        lines += ["Same val data, other methods:", ""]
        lines += ["| method | " + " | ".join(m.heading() for m in shown) + " |", "|---|" + "---:|" * len(shown)]
        for ref in sec.references:
            lines.append(f"| {ref.label} | " + " | ".join(m.format(ref.values.get(m.name)) for m in shown) + " |")
        lines.append("")
    if sec.findings:
        lines += [sec.findings.rstrip("\n"), ""]
    return lines


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def markdown(sections: list[Section], extra: str = "") -> str:
    """The summary the demo prints: per recipe its table and reference methods, ``extra``, provenance."""
    lines = ["# greenpipe summary", ""]
    keys = source_keys([r.source for sec in sections for r in sec.rows])
    for sec in sections:
        if len(sections) > 1:
            lines += [f"## Recipe `{sec.recipe.name}`", ""]
        lines += _table(sec, keys)
    if extra:  # further sections (the power soak) go before the provenance notes
        lines += [extra.rstrip("\n"), ""]
    lines.append("Where the figures come from (a table row's source column names its line):")
    lines.append("")
    for src, key in keys.items():
        lines.append(f"- {key} {src}")
    for sec in sections:
        for ref in sec.references:
            lines.append(f"- {ref.label}: {ref.source}")
    for sec in sections:
        shown = [m for m in sec.recipe.metrics if m.column]
        primary = sec.recipe.metrics[0]
        shapes = sorted({_shape(r.input_shape) for r in sec.rows if r.input_shape})
        if shapes:
            repeats = sorted({r.repeats for r in sec.rows})
            lines.append(f"- {sec.recipe.name} latency and fps: MLPerf LoadGen SingleStream (p90) and Offline on "
                         f"{', '.join(shapes)} queries, the median over {'/'.join(map(str, repeats))} run(s) of each "
                         "with their min–max in brackets")
        lines.append(f"- {sec.recipe.name} {', '.join(m.label for m in shown)}: the deployed artifact on the val "
                     f"split; the drop column is how much worse {primary.label} is than the float variant on the "
                     "same device")
    lines.append("- GMACs: multiply-accumulates of one query, counted from the deployed ONNX graph at the query's "
                 "shape (Conv, MatMul, Gemm; greenpipe/bench/macs.py), times the passes of a self-ensemble row; "
                 "— where the artifact is not one ONNX graph")
    lines.append("- agreement: max |deployed - fake-quant| per variant is in metrics/compile/")
    return "\n".join(lines) + "\n"


def pareto_front(rows: list[Row], x: str, y: str, higher_y: bool = True) -> list[Row]:
    """Rows not dominated in (better x, better y); lower x is better except for ``fps``."""
    higher_x = x == "fps"
    pts = [r for r in rows if r.get(x) is not None and r.get(y) is not None and not math.isnan(r.get(y))]

    def at_least(a: float, b: float, higher: bool) -> bool:
        return a >= b if higher else a <= b

    front = []
    for r in pts:
        rx, ry = r.get(x), r.get(y)
        dominated = any(
            at_least(o.get(x), rx, higher_x) and at_least(o.get(y), ry, higher_y)
            and (o.get(x) != rx or o.get(y) != ry)
            for o in pts
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r.get(x))


def pareto_plot(rows: list[Row], path: Path, recipe: Recipe, x: str = "p90_ms", y: str = "",
                references: list[Reference] | None = None) -> None:
    """Quality vs speed scatter, one marker per device, Pareto front joined; ``y`` "" = the primary metric.

    Each reference method with a ``y`` value is a horizontal line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric_of(recipe, y or recipe.metrics[0].name, "report.pareto_y")
    y = metric.name
    better = "higher" if metric.higher_is_better else "lower"
    labels = {"p90_ms": "p90 latency (ms, lower is better)", "p50_ms": "p50 latency (ms)",
              "fps": "throughput (fps, Offline)"}
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    pts = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    for device in sorted({r.device for r in pts}):
        sel = [r for r in pts if r.device == device]
        ax.scatter([r.get(x) for r in sel], [r.get(y) for r in sel], s=50, label=device, zorder=3)
        for k, r in enumerate(sorted(sel, key=lambda r: r.get(x))):  # alternate sides: close points stay legible
            ax.annotate(r.label, (r.get(x), r.get(y)), textcoords="offset points",
                        xytext=(6, 5) if k % 2 == 0 else (6, -13), fontsize=9)
    front = pareto_front(pts, x, y, metric.higher_is_better)
    if len(front) > 1:
        ax.plot([r.get(x) for r in front], [r.get(y) for r in front], "--", color="gray", lw=1,
                label="Pareto front", zorder=2)
    styles = [":", "-.", "-", (0, (5, 1))]
    for k, ref in enumerate(r for r in references or [] if r.values.get(y) is not None):
        ax.axhline(ref.values[y], ls=styles[k % len(styles)], color=ref.color, lw=1, label=ref.label)
    ax.set_xlabel(labels.get(x, x))
    ax.set_ylabel(f"{metric.heading()} on val ({better} is better)")
    ax.set_title("Quality vs speed of the deployed artifacts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
