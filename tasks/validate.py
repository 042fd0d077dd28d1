"""Stage ``validate``: check the prepared dataset with Great Expectations before training.

Run (as dvc.yaml does)::

    python -m tasks.validate --data artifacts/prepared --reports reports/validate --metrics metrics/validate.json

Builds the per-file table of greenpipe.data.table (every file the manifest
lists and every file on disk) and validates it against an expectation suite
made from ``params.validate`` in an ephemeral Great Expectations context:
files decode, are listed, have the expected channels and bit depth, are at
least ``min_side`` px, every noisy file has its clean file (ground truth) of
the same size, noisy PSNR lies in ``noisy_psnr``, no val clean image repeats a
train clean image (more than ``max_val_train_overlap`` times), and each split
holds at least ``min_train`` / ``min_val`` samples.

Always writes ``--metrics`` (success, counts, failures per expectation) and,
under ``--reports``: ``result.json`` (the GX validation result),
``files.csv`` (the table), ``failures.txt`` and ``index.html``.  On failure it
prints every bad file with the expectation it failed, the observed and the
expected value, and exits with status 2.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from greenpipe.data.prepared import SPLITS
from greenpipe.data.table import build_table
from greenpipe.errors import DataError, GreenpipeError
from greenpipe.io import atomic_write_bytes, write_json
from greenpipe.params import Params, ValidateParams, load_params
from tasks._cli import run_stage


class ValidationFailed(DataError):
    """The prepared dataset broke expectations; ``metrics`` is what the stage measured."""

    def __init__(self, message: str, metrics: dict):
        super().__init__(message)
        self.metrics = metrics


@dataclass(frozen=True)
class Check:
    """One expectation plus how to word its failures for a person.

    Per-file checks word each failing row with ``observed``.  An aggregate
    check (a column sum) also names rows: those ``offenders`` selects.  A
    split-level check (``split`` set) words the observed count instead.
    """

    name: str
    expectation: Any  # a great_expectations Expectation
    expected: str
    observed: Callable[[pd.Series], str] | None = None
    offenders: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    split: str | None = None


def _fmt_size(row: pd.Series) -> str:
    return f"{row['width']:.0f}x{row['height']:.0f} px"


def make_checks(p: ValidateParams) -> list[Check]:
    """The expectation suite for ``params.validate``, in report order."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

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


def run_checks(table: pd.DataFrame, checks: list[Check]) -> Any:
    """Validate ``table`` with an ephemeral GX context; return the suite validation result."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In memory, no analytics (no network), no progress bars in DVC's log.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    batch_definition = (
        context.data_sources.add_pandas("greenpipe")
        .add_dataframe_asset("prepared_files")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = gx.ExpectationSuite(name="prepared_dataset")
    for check in checks:
        check.expectation.meta = {"check": check.name}
        suite.add_expectation(check.expectation)
    suite = context.suites.add(suite)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": table})
    return batch.validate(suite, result_format="COMPLETE")


def failure_lines(
    table: pd.DataFrame, result: Any, checks: list[Check], data: Path
) -> tuple[list[str], list[str], dict[str, int]]:
    """(one line per bad file, dataset-level lines: short splits, unevaluable checks; failures per check)."""
    by_name = {c.name: c for c in checks}
    per_file: dict[str, list[str]] = {}
    counts = {c.name: 0 for c in checks}
    dataset_lines = []
    for r in result.results:
        check = by_name[r.expectation_config.meta["check"]]
        if r.success:
            continue
        if check.split is not None:
            counts[check.name] = 1
            dataset_lines.append(
                f"{data / check.split}: {check.name}: observed {r.result.get('observed_value')} samples; "
                f"expected {check.expected}"
            )
            continue
        if check.offenders is not None:
            bad = check.offenders(table)
        elif "unexpected_index_list" in r.result:
            bad = table.loc[r.result["unexpected_index_list"]]
        else:  # GX could not evaluate it (its exception is in result.json): say so, never pass silently
            counts[check.name] = 1
            dataset_lines.append(f"{data}: {check.name}: could not be evaluated; see result.json")
            continue
        counts[check.name] = len(bad)
        for _, row in bad.iterrows():
            per_file.setdefault(row["file"], []).append(
                f"{check.name}: observed {check.observed(row)}; expected {check.expected}"
            )
    file_lines = [f"{data / file}: " + " | ".join(why) for file, why in sorted(per_file.items())]
    return file_lines, dataset_lines, counts


def render_html(
    table: pd.DataFrame, lines: list[str], counts: dict[str, int], checks: list[Check], success: bool
) -> str:
    """A self-contained HTML page: verdict, one row per expectation, the failures, the file table."""
    esc = html.escape
    verdict = "PASSED" if success else "FAILED"
    check_rows = "".join(
        f"<tr class={'bad' if counts[c.name] else 'ok'}><td>{esc(c.name)}</td><td>{esc(c.expected)}</td>"
        f"<td>{counts[c.name]}</td></tr>"
        for c in checks
    )
    failures = "".join(f"<li>{esc(line)}</li>" for line in lines) or "<li>none</li>"
    shown = table.drop(columns=["sha256", "pixel_sha256"])
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{'' if pd.isna(v) else esc(str(v))}</td>" for v in row) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>greenpipe validate: {verdict}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px}}tr.bad td{{background:#fdd}}tr.ok td{{background:#dfd}}</style>
</head><body>
<h1>Prepared dataset: {verdict}</h1>
<h2>Expectations</h2><table><tr><th>check</th><th>expected</th><th>failures</th></tr>{check_rows}</table>
<h2>Failures</h2><ul>{failures}</ul>
<h2>Files ({len(table)})</h2><table><tr>{head}</tr>{body}</table>
</body></html>
"""


def validate(params: Params, data: Path, reports: Path) -> dict:
    """Validate the prepared dataset at ``data``; write reports; return metrics.

    Raises ValidationFailed (carrying the metrics) listing every bad file when
    an expectation fails.
    """
    data, reports = Path(data), Path(reports)
    table = build_table(data)
    checks = make_checks(params.validate_)
    result = run_checks(table, checks)
    file_lines, dataset_lines, counts = failure_lines(table, result, checks, data)
    lines = file_lines + dataset_lines
    success = bool(result.success)

    write_json(reports / "result.json", result.to_json_dict())
    atomic_write_bytes(reports / "files.csv", table.to_csv(index=False).encode())
    atomic_write_bytes(reports / "failures.txt", "".join(f"{line}\n" for line in lines).encode())
    atomic_write_bytes(reports / "index.html", render_html(table, lines, counts, checks, success).encode())

    samples = table[(table["role"] == "clean") & table["in_manifest"]]
    metrics = {
        "success": success,
        "files": len(table),
        **{f"{s}_samples": int((samples["split"] == s).sum()) for s in SPLITS},
        "bad_files": len(file_lines),
        "failures": counts,
    }
    if not success:
        raise ValidationFailed(
            f"{data}: the prepared dataset failed validation ({len(lines)} problem(s); "
            f"report: {reports / 'index.html'}):\n  " + "\n  ".join(lines),
            metrics,
        )
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Validate the prepared dataset (DVC stage validate).")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument(
        "--reports", type=Path, required=True, help="folder for result.json, files.csv, index.html"
    )
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def stage() -> None:
        try:
            metrics = validate(load_params(args.params), args.data, args.reports)
        except ValidationFailed as exc:
            write_json(args.metrics, exc.metrics)
            raise
        except GreenpipeError as exc:
            # Metrics are always written, so `dvc metrics show` says why there are none.
            write_json(args.metrics, {"success": False, "error": str(exc)})
            raise
        write_json(args.metrics, metrics)

    run_stage(stage)


if __name__ == "__main__":
    main()
