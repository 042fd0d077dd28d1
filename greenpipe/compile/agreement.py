"""Does the deployed artifact compute what the fake-quant model computed?

Both sets of outputs are the recipe's post-processed val outputs (whatever
its ``evaluate`` stores: denoised images, per-frame logits, ...), keyed by val
sample name.  The figures are in output units: with DPU numerics and the exact
QDQ rewrite they are 0, and anything up to one output LSB (2**-7 for an int8
output at fix_point 7) is a rounding difference rather than a wrong model.
SQNR (dB) is the reference's power over the difference's: unit-free, so it
reads the same for every recipe.

Isolated rounding flips are told from a wrong model: with float scales (the
x86 int8 variants) an activation inside the net that lands on a rounding tie
can round the other way in ONNX Runtime's integer kernels than in PyTorch's
fake-quant arithmetic, and moves the few outputs downstream of it (one
softmax probability of a segmenter by 0.02, say) while every other output
agrees.  So the check passes when every output is within the tolerance, or
when the outputs beyond it are at most ``OUTLIER_SHARE`` of all of them and
none is beyond ``OUTLIER_BOUND`` times the tolerance; those outliers are
recorded (``outliers``: count, share, largest) so the report shows them.  A
wrong rewrite (a zero point, a scale, a layout) moves a large share of the
outputs, and fails.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from greenpipe.errors import GreenpipeError

# Of all output elements: isolated rounding flips, not a wrong model. One flip on a stride-32 branch of a
# multi-resolution net reaches a 32 x 32 patch of every class map downstream of it.
OUTLIER_SHARE = 1e-3
OUTLIER_BOUND = 4.0  # x the tolerance: how far such a flip may move an output


def sqnr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(sum reference**2 / sum (estimate - reference)**2), float64; inf when they are equal."""
    noise = float(np.sum((estimate - reference) ** 2))
    signal = float(np.sum(reference**2))
    return float("inf") if noise == 0 else 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def compare(deployed: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            tolerance: float | None = None) -> dict:
    """Max / mean |deployed - reference| and the SQNR (dB, inf when equal), overall and per sample; with a
    ``tolerance``, the outputs beyond it (``outliers``), when there are any."""
    missing = sorted(set(reference) ^ set(deployed))
    if missing:
        raise GreenpipeError(
            f"agreement check: val samples {missing[:5]} are in only one of deployed / reference outputs; "
            "the prepared data changed since quantize ran: rerun `dvc repro quantize`"
        )
    rows, beyond, elements = [], 0, 0
    for name in sorted(reference):
        a, b = np.asarray(deployed[name], np.float64), np.asarray(reference[name], np.float64)
        if a.shape != b.shape:
            raise GreenpipeError(f"agreement check: {name}: deployed shape {a.shape} != reference {b.shape}")
        diff = np.abs(a - b)
        elements += diff.size
        if tolerance is not None:
            beyond += int(np.count_nonzero(diff > tolerance))
        rows.append(
            {
                "name": name,
                "max_abs_diff": float(diff.max()),
                "mean_abs_diff": float(diff.mean()),
                "differing_fraction": float(np.mean(diff > 0)),
                "sqnr_db": sqnr_db(b, a),
            }
        )
    worst = max(rows, key=lambda r: r["max_abs_diff"])
    result = {
        "max_abs_diff": worst["max_abs_diff"],
        "worst_sample": worst["name"],
        "mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in rows])),
        "min_sqnr_db": min(r["sqnr_db"] for r in rows),
        "samples": len(rows),
        "per_sample": rows,
    }
    if beyond:
        result["outliers"] = {"count": beyond, "of": elements, "share": beyond / elements,
                              "largest": worst["max_abs_diff"],
                              "passes_if": f"share <= {OUTLIER_SHARE:g} and largest <= {OUTLIER_BOUND:g} x tolerance"}
    return result


def check(agreement: dict, tolerance: float, variant: str, target: str) -> None:
    """Raise GreenpipeError when an output differs by more than ``tolerance``, unless those outputs are isolated
    rounding flips (at most ``OUTLIER_SHARE`` of all, each within ``OUTLIER_BOUND`` x ``tolerance``)."""
    if agreement["max_abs_diff"] <= tolerance:
        return
    outliers = agreement.get("outliers")
    if outliers and outliers["share"] <= OUTLIER_SHARE and agreement["max_abs_diff"] <= OUTLIER_BOUND * tolerance:
        return
    share = (f" ({outliers['count']} of {outliers['of']} outputs beyond it, share {outliers['share']:.3g}; "
             f"isolated rounding flips pass up to a share of {OUTLIER_SHARE:g} within {OUTLIER_BOUND:g} x the "
             "tolerance)" if outliers else "")
    raise GreenpipeError(
        f"compile {variant} for {target}: deployed artifact disagrees with the fake-quant model on val "
        f"sample {agreement['worst_sample']!r}: max |diff| = {agreement['max_abs_diff']:.6g} > tolerance "
        f"{tolerance:g}{share} (compile.targets.{target}.agreement_tolerance). The export or the QDQ rewrite "
        "changed the numerics; see compile_report.json (agreement.per_sample) and quant_report.json "
        "(scales)"
    )
