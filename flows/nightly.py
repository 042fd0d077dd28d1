"""Flow ``nightly``: the DVC DAG as concurrent Prefect tasks, then push, results commit and regression gate.

    greenpipe nightly run       # once, now (it runs: python -m flows.nightly)
    greenpipe nightly serve     # on this machine, on params.yaml's nightly.cron / timezone
    prefect deploy --prefect-file infra/prefect.yaml --all     # as a deployment on the build host's pool

One Prefect task per DVC stage (after foreach/matrix expansion), started as soon as the stages it
depends on succeeded, ``nightly.concurrency`` at a time; stages measuring on a ``local`` device
(deploy, soak) run with nothing beside them, so concurrency never skews fps or energy. Each runs
``dvc repro --single-item`` so DVC's
lock file and run-cache decide whether the command executes; a stage DVC's status calls unchanged, with
nothing upstream executed, is not handed to DVC again. A failed stage is retried (``nightly.retries``);
its dependents are skipped and everything else still runs. Afterwards: ``dvc push``, one commit of
dvc.lock + metrics + report on the results branch, the gate against the last successful nightly, and a
table and a markdown artifact. The flow ends Failed, with a summary, if a stage failed, a regression
fired or push / commit failed. The logic lives in greenpipe/nightly/; this module only composes it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run
from prefect.schedules import Cron
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from greenpipe.errors import GreenpipeError
from greenpipe.io import write_json
from greenpipe.nightly import report
from greenpipe.nightly.finish import finish
from greenpipe.nightly.graph import run_graph
from greenpipe.nightly.measure import constraints
from greenpipe.nightly.stages import (
    FAILED,
    UP_TO_DATE,
    StageOutcome,
    changed_stages,
    dvc_pull,
    dvc_push,
    git_pull,
    lock_entries,
    must_ask_dvc,
    order_lock_entries,
    repro,
    sequential_order,
)
from greenpipe.params import load_params
from greenpipe.pipeline import stages


# NO_CACHE: whether a stage runs is DVC's decision, never Prefect's result cache.
@task(task_run_name="{stage}", cache_policy=NO_CACHE)
def stage_task(stage: str, root: str, ask_dvc: bool, lock_retries: int, lock_backoff_s: float) -> dict:
    """One DVC stage: ``dvc repro --single-item`` when it may have changed, else up to date at once."""
    if not ask_dvc:
        return StageOutcome(stage, UP_TO_DATE, 0.0, 1, detail="dvc status: unchanged").to_dict()
    outcome = repro(stage, root, lock_retries=lock_retries, lock_backoff_s=lock_backoff_s)
    outcome = replace(outcome, attempts=task_run.run_count)
    get_run_logger().info("%s: %s in %.1f s", stage, outcome.status, outcome.seconds)
    return outcome.to_dict()


# Threads for up to nightly.concurrency's maximum; run_graph keeps the number actually running at the limit.
@flow(name="greenpipe-nightly", task_runner=ThreadPoolTaskRunner(max_workers=64))
def nightly(root: str = ".", params: str = "params.yaml"):
    """Run the DAG (only what changed, branches concurrently), push, commit results, gate regressions.

    Returns the night's record (also committed as nightly.json on the results branch); on failure the
    flow's state is Failed with a one-line summary and the record as its data.
    """
    log = get_run_logger()
    rootp = Path(root).resolve()
    all_params = load_params(rootp / params)
    p = all_params.nightly
    started = datetime.now(UTC).isoformat(timespec="seconds")
    if p.git_pull:
        git_pull(rootp)
    if p.dvc_pull:
        dvc_pull(rootp, p.remote)
    t0 = time.perf_counter()  # the stage phase: reading the graph, DVC's status, every stage

    infos = stages(rootp)
    deps = {i.name: i.deps for i in infos}
    order = sequential_order(rootp)
    before = lock_entries(rootp)
    changed = changed_stages(rootp)
    log.info(
        "DVC status: %d of %d stage(s) changed: %s",
        len(changed),
        len(deps),
        ", ".join(sorted(changed)) or "none",
    )

    run_stage = stage_task.with_options(retries=p.retries, retry_delay_seconds=p.retry_delay_s)
    submitted: dict[str, float] = {}

    def submit(stage: str, upstream: dict[str, StageOutcome]):
        submitted[stage] = time.perf_counter()
        ask = must_ask_dvc(stage, changed, upstream.values())
        return run_stage.submit(stage, str(rootp), ask, p.lock_retries, p.lock_backoff_s)

    def resolve(stage: str, future) -> StageOutcome:
        value = future.result(raise_on_failure=False)
        if future.state.is_completed() and isinstance(value, dict):
            return StageOutcome(**value)
        return StageOutcome(
            stage, FAILED, round(time.perf_counter() - submitted[stage], 2), p.retries + 1, detail=str(value)
        )

    # Timings and energy measured on this host must not share its cores with other stages.
    alone, groups = constraints(deps, {d: dev.host for d, dev in all_params.deploy.devices.items()})
    if not p.measure_alone:
        alone = set()
    outcomes = run_graph(deps, order, submit, resolve, p.concurrency, alone, groups)
    order_lock_entries(rootp, before, order)
    stages_s = time.perf_counter() - t0

    errors = []
    if p.dvc_push:
        try:
            dvc_push(rootp, p.remote)
        except GreenpipeError as exc:
            errors.append(f"dvc push: {exc}")

    night = finish(rootp, p, outcomes, started, stages_s, errors, str(flow_run.get_id() or ""), flow_run.get_name())
    create_markdown_artifact(night.markdown, key="greenpipe-nightly-report", description="greenpipe nightly report")
    if night.rows:
        create_table_artifact(
            report.table(night.rows), key="greenpipe-nightly-summary", description="variant x device, this night"
        )
    log.info("nightly %s: %s (%d command(s) ran, stages %.1f s)", night.status, night.headline,
             night.record["commands_run"], stages_s)
    if night.status != "ok":
        return Failed(message=f"nightly {night.status}: {night.headline}", data=night.record)
    return night.record


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.nightly``: run the flow once, or serve it on nightly.cron (``--serve NAME``)."""
    ap = argparse.ArgumentParser(description="The nightly flow: once now, or served on its cron.")
    ap.add_argument("--root", default=".", help="the greenpipe checkout (git + DVC) to run in")
    ap.add_argument("--params", default="params.yaml", help="params file, relative to ROOT")
    ap.add_argument("--ending", type=Path, help="write how the run ended here (JSON: completed, message, record)")
    ap.add_argument("--serve", metavar="NAME", help="serve as deployment greenpipe-nightly/NAME instead")
    args = ap.parse_args(argv)
    if args.serve:
        p = load_params(Path(args.root) / args.params).nightly
        nightly.serve(
            name=args.serve,
            schedules=[Cron(p.cron, timezone=p.timezone)],
            parameters={"root": str(Path(args.root).resolve()), "params": args.params},
        )
        return 0
    state = nightly(root=args.root, params=args.params, return_state=True)
    if args.ending is not None:
        record = state.result(raise_on_failure=False)
        unexpected = isinstance(record, BaseException) and not isinstance(record, GreenpipeError)
        write_json(args.ending, {
            "completed": state.is_completed(),
            "message": state.message or state.name,
            "record": record if isinstance(record, dict) else None,
            "error": repr(record) if unexpected else None,
        })  # fmt: skip
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
