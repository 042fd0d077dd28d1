"""Flow ``pipeline``: run the whole DVC DAG stage by stage as Prefect tasks.

    greenpipe run            # checks params.yaml, then runs: python -m flows.pipeline

One Prefect task per DVC stage (after foreach/matrix expansion), each running
``dvc repro --single-item <stage>`` (greenpipe.nightly.stages.repro, shared with
the nightly flow), in topological order, so DVC's cache and lock file decide
whether a stage executes.  Without PREFECT_API_URL, Prefect
starts a temporary local server on 127.0.0.1 for the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

from greenpipe.nightly.stages import RAN, repro
from greenpipe.pipeline import stages


def repro_stage(stage: str, root: Path) -> dict:
    """Run one stage through DVC (shared with the nightly flow); report whether its command executed."""
    outcome = repro(stage, root)
    return {"stage": stage, "executed": outcome.status == RAN, "seconds": outcome.seconds}


@task(task_run_name="{stage}")
def stage_task(stage: str, root: str) -> dict:
    result = repro_stage(stage, Path(root))
    get_run_logger().info("%s: %s in %.1f s", stage, "ran" if result["executed"] else "up to date", result["seconds"])
    return result


@flow(name="greenpipe-pipeline", log_prints=True)
def pipeline(root: str = ".") -> list[dict]:
    """Every stage in dependency order; stops at the first failure (its dependents cannot run)."""
    results = []
    for info in stages(root):
        results.append(stage_task(info.name, str(Path(root).resolve())))
    ran = [r["stage"] for r in results if r["executed"]]
    print(f"{len(ran)} stage(s) ran, {len(results) - len(ran)} up to date: {', '.join(ran) or 'none'}")
    return results


if __name__ == "__main__":
    sys.exit(0 if pipeline(return_state=True).is_completed() else 1)
