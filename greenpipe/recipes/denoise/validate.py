"""The denoise recipe's data checks: the prepared dataset, checked with Great Expectations before training.

The ``validate`` stage (``python -m tasks.validate``) runs :func:`validate`.
It builds the per-file table of :mod:`greenpipe.recipes.denoise.table` (every
file the manifest lists and every file on disk) and checks it with
:func:`greenpipe.validate.check_table` against the suite :func:`make_checks`
makes from ``params.validate``: files decode, are listed, have the expected
channels and bit depth, are at least ``min_side`` px, every noisy file has its
clean file (ground truth) of the same size, noisy PSNR lies in
``noisy_psnr``, no val clean image repeats a train clean image (more than
``max_val_train_overlap`` times), and each split holds at least
``min_train`` / ``min_val`` samples.

The reports (``result.json``, ``files.csv``, ``failures.txt``,
``index.html``) are written whatever the verdict; on failure
:class:`~greenpipe.validate.ValidationFailed` lists every bad file with the
expectation it failed, the observed and the expected value.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from greenpipe.data.prepared import SPLITS
from greenpipe.params import Section
from greenpipe.recipes.base import recipe_validate_params

# pandas, Great Expectations and the table load when the stage runs: the recipe imports this module
# (for DenoiseValidateParams) wherever it scores an artifact.
if TYPE_CHECKING:
    import pandas as pd

    from greenpipe.params import Params
    from greenpipe.validate import Check

# Columns index.html leaves out (files.csv keeps them).
HASHES = ("sha256", "pixel_sha256")


class DenoiseValidateParams(Section):
    """The ``validate:`` section of params.yaml: what the prepared dataset must satisfy."""

    min_side: int = Field(64, ge=8)  # px
    channels: Literal[1, 3] = 3
    bit_depth: Literal[8, 16] = 8
    max_val_train_overlap: int = Field(0, ge=0)  # val clean images allowed to repeat a train clean image
    noisy_psnr: tuple[float, float] = (10.0, 48.0)  # dB, noisy vs clean: [low, high]
    min_train: int = Field(4, ge=1)  # samples
    min_val: int = Field(1, ge=1)

    @field_validator("noisy_psnr", mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:
        return tuple(float(x) for x in v) if isinstance(v, list) else v


def _fmt_size(row: pd.Series) -> str:
    return f"{row['width']:.0f}x{row['height']:.0f} px"


def make_checks(p: DenoiseValidateParams) -> list[Check]:
    """The expectation suite for ``params.validate``, in report order."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    from greenpipe.validate import Check

    lo, hi = p.noisy_psnr

    def samples(split: str) -> Any:
        """Row condition: the rows that count as one sample of ``split`` (its listed clean files)."""
        return (Column("role") == "clean") & (Column("in_manifest") == True) & (Column("split") == split)

    return [
        Check(
            "decodes", gxe.ExpectColumnValuesToBeInSet(column="decode_error", value_set=[""]),
            "a readable image file", lambda r: r["decode_error"],
        ),
        Check(
            "in_manifest", gxe.ExpectColumnValuesToBeInSet(column="in_manifest", value_set=[True]),
            "listed in manifest.json (rerun ingest, or delete the stray file)", lambda r: "not listed",
        ),
        Check(
            "channels", gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[p.channels]),
            f"{p.channels} channel(s)", lambda r: f"{r['channels']:.0f} channel(s)",
        ),
        Check(
            "bit_depth", gxe.ExpectColumnValuesToBeInSet(column="bit_depth", value_set=[p.bit_depth]),
            f"{p.bit_depth}-bit", lambda r: f"{r['bit_depth']:.0f}-bit",
        ),
        Check(
            "min_side", gxe.ExpectColumnValuesToBeBetween(column="min_side", min_value=p.min_side),
            f"both sides >= {p.min_side} px", _fmt_size,
        ),
        Check(
            "pair_complete", gxe.ExpectColumnValuesToBeInSet(column="has_partner", value_set=[True]),
            "a clean (ground truth) and a noisy file per sample",
            lambda r: f"{r['partner'] or 'its pair'} is missing" + (" (no ground truth)" if r["role"] == "noisy" else ""),
        ),
        Check(
            "pair_size", gxe.ExpectColumnValuesToBeInSet(column="pair_match", value_set=[True]),
            "the same size as its pair", lambda r: f"{_fmt_size(r)} vs {r['partner']} {r['partner_size']} px",
        ),
        Check(
            "noisy_psnr", gxe.ExpectColumnValuesToBeBetween(column="noisy_psnr", min_value=lo, max_value=hi),
            f"noisy vs clean PSNR in [{lo:g}, {hi:g}] dB", lambda r: f"{r['noisy_psnr']:.2f} dB",
        ),
        Check(
            "no_leakage",
            gxe.ExpectColumnSumToBeBetween(column="leak", min_value=0, max_value=p.max_val_train_overlap),
            f"at most {p.max_val_train_overlap} val clean image(s) identical to a train clean image",
            lambda r: f"same pixels as {r['leak_with']}", offenders=lambda t: t[t["leak"] == 1],
        ),
        Check(
            "min_train",
            gxe.ExpectTableRowCountToBeBetween(min_value=p.min_train, row_condition=samples("train")),
            f">= {p.min_train} train samples", split="train",
        ),
        Check(
            "min_val",
            gxe.ExpectTableRowCountToBeBetween(min_value=p.min_val, row_condition=samples("val")),
            f">= {p.min_val} val samples", split="val",
        ),
    ]  # fmt: skip


def validate(params: Params, data: Path, reports: Path) -> dict:
    """Validate the prepared dataset at ``data``; write reports under ``reports``; return metrics.

    Raises ValidationFailed (carrying the metrics) listing every bad file when
    an expectation fails.
    """
    from greenpipe.recipes.denoise.table import build_table
    from greenpipe.validate import check_table

    data, reports = Path(data), Path(reports)
    table = build_table(data)
    verdict = check_table(table, make_checks(recipe_validate_params(params)), data, reports, hidden=HASHES)
    samples = table[(table["role"] == "clean") & table["in_manifest"]]
    return verdict.outcome(data, reports, len(table), {s: int((samples["split"] == s).sum()) for s in SPLITS})
