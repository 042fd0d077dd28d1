"""The end of a nightly run: collect the night's figures, gate them, commit the results, write the report.

    night = finish(root, params.nightly, outcomes, started, stages_s, errors, run_id, run_name)

Pure logic over the repository and the stage outcomes: the nightly flow (flows/nightly.py) only
publishes what this returns (Prefect artifacts, log line, the flow's final state).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from greenpipe.errors import GreenpipeError
from greenpipe.nightly import gate, report, results
from greenpipe.nightly.stages import FAILED, StageOutcome, count_commands
from greenpipe.params import NightlyParams


@dataclass(frozen=True)
class Night:
    """What one night produced: its record (committed as nightly.json), status, report and headline."""

    record: dict
    status: str  # ok | regressed | failed
    markdown: str
    headline: str

    @property
    def rows(self) -> dict:
        return self.record["rows"]


def finish(root: Path, p: NightlyParams, outcomes: list[StageOutcome], started: str, stages_s: float,
           errors: list[str], run_id: str, run_name: str) -> Night:
    """Gate this night's rows against the last good night, commit the results branch, build the report."""
    errors = list(errors)
    rows = results.collect_rows(root / "metrics")
    base = results.last_good(root, p.results_branch)
    base_rows = base.record.get("rows", {}) if base else {}
    regressions = gate.compare(rows, base_rows, p.gate)
    not_compared = gate.unlike_meters(rows, base_rows, p.gate)
    failures = [o for o in outcomes if o.status == FAILED]
    if failures or errors:
        status = "failed"
    else:
        status = "regressed" if regressions else "ok"
    record = {
        "status": status,
        "started_at": started,
        "flow_run_id": run_id,
        "flow_run_name": run_name,
        "source_commit": results.source_commit(root),
        "stages_s": round(stages_s, 2),
        "commands_run": count_commands(outcomes),
        "stages": [o.to_dict() for o in outcomes],
        "rows": rows,
        "baseline": {"commit": base.commit, "label": base.label} if base else None,
        "regressions": [r.to_dict() for r in regressions],
        "not_compared": not_compared,
        "errors": errors,
    }
    commit = None
    try:
        commit = results.commit_results(
            root, p.results_branch, results.result_files(root), record, f"nightly {started}: {status}"
        )
    except GreenpipeError as exc:
        errors.append(f"results commit: {exc}")
        status = record["status"] = "failed"
    record["results_commit"] = commit
    plots = {f.name: f.as_uri() for f in sorted((root / "reports" / "summary").glob("*.png"))}
    md = report.markdown(outcomes, rows, regressions, base.label if base else None,
                         gate.missing_rows(rows, base_rows), errors, plots, commit, not_compared)
    return Night(record, status, md, report.headline(failures, regressions, errors))
