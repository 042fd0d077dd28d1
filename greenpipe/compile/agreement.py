"""Does the deployed artifact compute what the fake-quant model computed?

Both sets of outputs are the recipe's post-processed val outputs (whatever
its ``evaluate`` stores: denoised images, per-frame logits, ...), keyed by val
sample name.  The figures are in output units: with DPU numerics and the exact
QDQ rewrite they are 0, and anything up to one output LSB (2**-7 for an int8
output at fix_point 7) is a rounding difference rather than a wrong model.
SQNR (dB) is the reference's power over the difference's: unit-free, so it
reads the same for every recipe.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from greenpipe.errors import GreenpipeError


def sqnr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(sum reference**2 / sum (estimate - reference)**2), float64; inf when they are equal."""
    noise = float(np.sum((estimate - reference) ** 2))
    signal = float(np.sum(reference**2))
    return float("inf") if noise == 0 else 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def compare(deployed: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict:
    """Max / mean |deployed - reference| and the SQNR (dB, inf when equal), overall and per sample."""
    missing = sorted(set(reference) ^ set(deployed))
    if missing:
        raise GreenpipeError(
            f"agreement check: val samples {missing[:5]} are in only one of deployed / reference outputs; "
            "the prepared data changed since quantize ran: rerun `dvc repro quantize`"
        )
    rows = []
    for name in sorted(reference):
        a, b = np.asarray(deployed[name], np.float64), np.asarray(reference[name], np.float64)
        if a.shape != b.shape:
            raise GreenpipeError(f"agreement check: {name}: deployed shape {a.shape} != reference {b.shape}")
        diff = np.abs(a - b)
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
    return {
        "max_abs_diff": worst["max_abs_diff"],
        "worst_sample": worst["name"],
        "mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in rows])),
        "min_sqnr_db": min(r["sqnr_db"] for r in rows),
        "samples": len(rows),
        "per_sample": rows,
    }


def check(agreement: dict, tolerance: float, variant: str, target: str) -> None:
    """Raise GreenpipeError when the worst image differs by more than ``tolerance``."""
    if agreement["max_abs_diff"] > tolerance:
        raise GreenpipeError(
            f"compile {variant} for {target}: deployed artifact disagrees with the fake-quant model on val "
            f"sample {agreement['worst_sample']!r}: max |diff| = {agreement['max_abs_diff']:.6g} > tolerance "
            f"{tolerance:g} (compile.targets.{target}.agreement_tolerance). The export or the QDQ rewrite "
            "changed the numerics; see compile_report.json (agreement.per_sample) and quant_report.json "
            "(scales)"
        )
