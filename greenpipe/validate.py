"""Checking a dataset's per-file table with Great Expectations, and the report of it.

A recipe describes its data as a pandas table (one row per file) and a list of
:class:`Check` (a GX expectation plus how to word its failures for a person);
:func:`check_table` validates the table in an ephemeral, in-memory GX context
(no analytics, no network) and writes under ``reports``: ``result.json`` (the
GX validation result), ``files.csv`` (the table), ``failures.txt`` (one line
per bad file, then the dataset-level problems) and ``index.html``.  For the
denoise recipe's checks see :mod:`greenpipe.recipes.denoise.validate`.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from greenpipe.errors import DataError
from greenpipe.io import atomic_write_bytes, write_json


class ValidationFailed(DataError):
    """A dataset broke its expectations; ``metrics`` is what the stage measured."""

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
    table: pd.DataFrame,
    lines: list[str],
    counts: dict[str, int],
    checks: list[Check],
    success: bool,
    hidden: tuple[str, ...] = (),
) -> str:
    """A self-contained HTML page: verdict, one row per expectation, the failures, the file table.

    ``hidden`` names columns of ``table`` the page leaves out (long hashes).
    """
    esc = html.escape
    verdict = "PASSED" if success else "FAILED"
    check_rows = "".join(
        f"<tr class={'bad' if counts[c.name] else 'ok'}><td>{esc(c.name)}</td><td>{esc(c.expected)}</td>"
        f"<td>{counts[c.name]}</td></tr>"
        for c in checks
    )
    failures = "".join(f"<li>{esc(line)}</li>" for line in lines) or "<li>none</li>"
    shown = table.drop(columns=list(hidden))
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


@dataclass(frozen=True)
class Verdict:
    """What :func:`check_table` found: overall success, the problems worded, failures per check."""

    success: bool
    file_lines: list[str]  # one per bad file, every expectation it failed
    dataset_lines: list[str]  # short splits, checks GX could not evaluate
    counts: dict[str, int]  # check name -> failures

    @property
    def lines(self) -> list[str]:
        return self.file_lines + self.dataset_lines

    def outcome(self, data: Path, reports: Path, files: int, samples: dict[str, int]) -> dict:
        """The validate stage's metrics (``samples``: per split); raise ValidationFailed carrying them on failure."""
        metrics = {"success": self.success, "files": files, **{f"{s}_samples": n for s, n in samples.items()},
                   "bad_files": len(self.file_lines), "failures": self.counts}
        if not self.success:
            raise ValidationFailed(
                f"{data}: the prepared dataset failed validation ({len(self.lines)} problem(s); "
                f"report: {reports / 'index.html'}):\n  " + "\n  ".join(self.lines),
                metrics,
            )
        return metrics


def _without_run_ids(result: dict) -> dict:
    """GX's result without what differs from run to run (the random id of each expectation, the batch's
    load time): the same data and checks then write the same report, so DVC sees an unchanged output."""
    for entry in result.get("results", []):
        entry.get("expectation_config", {}).pop("id", None)
    result.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
    return result


def check_table(
    table: pd.DataFrame, checks: list[Check], data: Path, reports: Path, hidden: tuple[str, ...] = ()
) -> Verdict:
    """Validate ``table`` (the files of the dataset at ``data``) against ``checks``; write the reports.

    ``hidden``: columns ``index.html`` leaves out (``files.csv`` keeps every column).
    """
    result = run_checks(table, checks)
    file_lines, dataset_lines, counts = failure_lines(table, result, checks, data)
    verdict = Verdict(bool(result.success), file_lines, dataset_lines, counts)
    lines = verdict.lines

    write_json(reports / "result.json", _without_run_ids(result.to_json_dict()))
    atomic_write_bytes(reports / "files.csv", table.to_csv(index=False).encode())
    atomic_write_bytes(reports / "failures.txt", "".join(f"{line}\n" for line in lines).encode())
    atomic_write_bytes(
        reports / "index.html", render_html(table, lines, counts, checks, verdict.success, hidden).encode()
    )
    return verdict
