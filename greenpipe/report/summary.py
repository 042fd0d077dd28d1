"""Build the variant x device summary from the stages' metrics files.

Every figure keeps its provenance: the deploy stage records on which device
(and how) it measured; the table carries that text through to the markdown.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from greenpipe.io import read_json
from greenpipe.report.quant import bits_label


@dataclass(frozen=True)
class Row:
    variant: str
    device: str
    psnr: float
    ssim: float
    drop_db: float | None  # PSNR drop vs the fp32 variant on the same device
    p50_ms: float | None
    p90_ms: float | None
    fps: float | None
    model_mb: float | None
    loadgen_valid: bool | None
    agreement_max_diff: float | None  # deployed artifact vs fake-quant model
    dpu_numerics: bool | None
    source: str
    bits: str | None = None  # 'w8a8', 'w4a8' (greenpipe.report.quant.bits_label)
    deployable_to_dpu: bool | None = None  # the Vitis AI compiler can take it
    numerics: str | None = None  # a variant's own label for its numerics ('Intel x86 path (INC)')
    passes: int = 1  # > 1: the artifact run as a self-ensemble over this many flips / rotations

    @property
    def label(self) -> str:
        """The variant as the table and the plot name it: ``ptq8``, or ``ptq8 x8`` for its self-ensemble."""
        return self.variant if self.passes == 1 else f"{self.variant} x{self.passes}"

    def to_dict(self) -> dict:
        return asdict(self)


def _num(d: dict, key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def collect(metrics: Path) -> list[Row]:
    """One row per ``metrics/deploy/<variant>-<device>.json`` (and one per self-ensemble run), fp32 drop filled in.

    The drop compares like with like: a self-ensemble against fp32's self-ensemble on the same device.
    """
    runs = []
    for path in sorted((metrics / "deploy").glob("*.json")):
        d = read_json(path)
        variant = d.get("variant") or path.stem.rsplit("-", 1)[0]
        device = d.get("device_name") or path.stem.rsplit("-", 1)[-1]
        target = d.get("target", "cpu")
        comp_path = metrics / "compile" / f"{variant}-{target}.json"
        comp = read_json(comp_path) if comp_path.exists() else {}
        quant_path = metrics / "quantize" / f"{variant}.json"
        quant = read_json(quant_path) if quant_path.exists() else {}
        agreement = comp.get("agreement", {}) if isinstance(comp.get("agreement"), dict) else {}
        runs.append((variant, device, 1, d, d, agreement, quant))
        ensemble = d.get("self_ensemble")
        if isinstance(ensemble, dict):
            runs.append((variant, device, int(ensemble.get("passes", 1)), ensemble, d, agreement, quant))
    fp32 = {(dev, n): r["psnr"] for v, dev, n, r, *_ in runs if v == "fp32" and "psnr" in r}
    rows = []
    for variant, device, passes, r, d, agreement, quant in runs:
        base = fp32.get((device, passes))
        rows.append(
            Row(
                variant=variant,
                device=device,
                psnr=float(r.get("psnr", math.nan)),
                ssim=float(r.get("ssim", math.nan)),
                drop_db=None if base is None or "psnr" not in r else base - float(r["psnr"]),
                p50_ms=_num(r, "p50_ms"),
                p90_ms=_num(r, "p90_ms"),
                fps=_num(r, "fps"),
                model_mb=_num(d, "model_mb"),
                loadgen_valid=r.get("loadgen_valid"),
                agreement_max_diff=_num(agreement, "max_abs_diff"),
                dpu_numerics=quant.get("dpu_numerics"),
                source=str(r.get("source", "unknown")),
                bits=bits_label(quant.get("bits")),
                deployable_to_dpu=quant.get("deployable_to_dpu"),
                numerics=quant.get("numerics"),
                passes=passes,
            )
        )
    return rows


def _fmt(v, spec: str = ".2f", none: str = "—") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    if isinstance(v, bool):
        return "yes" if v else "no"
    return format(v, spec)


def _numerics(r: Row) -> str:
    """The DPU-numerics cell: yes / no, plus the variant's own label (``no: Intel x86 path (INC)``)."""
    return _fmt(r.dpu_numerics) + (f": {r.numerics}" if r.numerics else "")


def markdown(rows: list[Row], baseline: dict | None, train: dict | None, input_desc: str = "",
             extra: str = "") -> str:
    """The summary the demo prints: table, classical baselines, ``extra`` sections, provenance notes."""
    lines = ["# greenpipe summary", ""]
    lines += [
        "| variant | device | PSNR dB | SSIM | drop vs fp32 dB | p90 ms | fps | model MB | DPU numerics | bits "
        "| deployable to DPU | LoadGen |",
        "|---|---|---:|---:|---:|---:|---:|---:|:-:|:-:|:-:|:-:|",
    ]
    for r in sorted(rows, key=lambda r: (r.device, r.passes, r.variant != "fp32", r.variant)):
        valid = {True: "VALID", False: "INVALID", None: "—"}[r.loadgen_valid]
        lines.append(
            f"| {r.label} | {r.device} | {_fmt(r.psnr)} | {_fmt(r.ssim, '.4f')} | {_fmt(r.drop_db, '+.2f')} "
            f"| {_fmt(r.p90_ms)} | {_fmt(r.fps, '.1f')} | {_fmt(r.model_mb, '.3f')} | {_numerics(r)} "
            f"| {r.bits or '—'} | {_fmt(r.deployable_to_dpu)} | {valid} |"
        )
    lines.append("")
    if baseline:
        noisy = baseline.get("noisy_psnr")
        lines += ["Same val images, other denoisers:", ""]
        lines += ["| method | PSNR dB | SSIM |", "|---|---:|---:|"]
        if noisy is not None:
            lines.append(f"| noisy input (no denoising) | {_fmt(noisy)} | — |")
        for name in ("nlm", "wavelet"):
            if name in baseline:
                label = {"nlm": "non-local means", "wavelet": "wavelet (BayesShrink)"}[name]
                lines.append(f"| {label}, tuned on train | {_fmt(baseline[name]['psnr'])} | {_fmt(baseline[name]['ssim'], '.4f')} |")
        if train:
            lines.append(f"| UNet float (PyTorch, after training) | {_fmt(train.get('val_psnr'))} | {_fmt(train.get('val_ssim'), '.4f')} |")
        for r in sorted((r for r in rows if r.variant == "fp32" and r.passes > 1), key=lambda r: r.device):
            lines.append(f"| UNet fp32 artifact on {r.device}, x{r.passes} self-ensemble (mean over {r.passes} "
                         f"flips / rotations; p90 {_fmt(r.p90_ms)} ms) | {_fmt(r.psnr)} | {_fmt(r.ssim, '.4f')} |")
        lines.append("")
    if extra:  # further sections (the power soak) go before the provenance notes
        lines += [extra.rstrip("\n"), ""]
    lines.append("Where the figures come from:")
    lines.append("")
    for src in sorted({r.source for r in rows}):
        lines.append(f"- {src}")
    if input_desc:
        lines.append(f"- latency and fps: MLPerf LoadGen SingleStream (p90) and Offline on {input_desc}")
    lines.append("- PSNR/SSIM: the deployed artifact (ONNX Runtime), whole val images; drop is vs fp32 on the same device")
    lines.append("- agreement: max |deployed - fake-quant| per variant is in metrics/compile/")
    return "\n".join(lines) + "\n"


def pareto_front(rows: list[Row], x: str, y: str) -> list[Row]:
    """Rows not dominated in (lower x, higher y); x = fps counts as higher-is-better."""
    higher_x = x == "fps"
    pts = [r for r in rows if getattr(r, x) is not None and not math.isnan(getattr(r, y))]
    front = []
    for r in pts:
        rx, ry = getattr(r, x), getattr(r, y)
        dominated = any(
            (getattr(o, x) >= rx if higher_x else getattr(o, x) <= rx) and getattr(o, y) >= ry
            and (getattr(o, x) != rx or getattr(o, y) != ry)
            for o in pts
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: getattr(r, x))


def pareto_plot(rows: list[Row], path: Path, x: str = "p90_ms", y: str = "psnr", baseline: dict | None = None) -> None:
    """Quality vs speed scatter, one marker per device, Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"p90_ms": "p90 latency (ms, lower is better)", "p50_ms": "p50 latency (ms)",
              "fps": "throughput (fps, Offline)", "psnr": "PSNR on val (dB)", "ssim": "SSIM on val"}
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    pts = [r for r in rows if getattr(r, x) is not None]
    for device in sorted({r.device for r in pts}):
        sel = [r for r in pts if r.device == device]
        ax.scatter([getattr(r, x) for r in sel], [getattr(r, y) for r in sel], s=50, label=device, zorder=3)
        for k, r in enumerate(sorted(sel, key=lambda r: getattr(r, x))):  # alternate sides: close points stay legible
            ax.annotate(r.label, (getattr(r, x), getattr(r, y)), textcoords="offset points",
                        xytext=(6, 5) if k % 2 == 0 else (6, -13), fontsize=9)
    front = pareto_front(pts, x, y)
    if len(front) > 1:
        ax.plot([getattr(r, x) for r in front], [getattr(r, y) for r in front], "--", color="gray", lw=1,
                label="Pareto front", zorder=2)
    if baseline and y == "psnr":
        for name, style in (("nlm", ":"), ("wavelet", "-.")):
            if name in baseline:
                ax.axhline(baseline[name]["psnr"], ls=style, color="tab:red", lw=1, label=f"{name} (classical)")
        if baseline.get("noisy_psnr") is not None:
            ax.axhline(baseline["noisy_psnr"], ls="-", color="lightgray", lw=1, label="noisy input")
    ax.set_xlabel(labels.get(x, x))
    ax.set_ylabel(labels.get(y, y))
    ax.set_title("Quality vs speed of the deployed artifacts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
