"""Stages through DVC, several at once: real overlap, lock contention handled, dvc.lock as a sequential run.

Uses the synthetic project (tests/nightly/synthetic.py): real DVC, commands of a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import zc.lockfile

from greenpipe.nightly.graph import run_graph
from greenpipe.nightly.stages import (
    RAN,
    UP_TO_DATE,
    StageFailed,
    StageOutcome,
    changed_stages,
    lock_entries,
    must_ask_dvc,
    order_lock_entries,
    repro,
    sequential_order,
)
from greenpipe.pipeline import stages
from tests.nightly import synthetic


def _overlap(a: tuple[str, float, float], b: tuple[str, float, float]) -> float:
    return min(a[2], b[2]) - max(a[1], b[1])


def _run_concurrently(ws, limit: int = 2) -> dict[str, str]:
    """The whole DAG the way the flow runs it (graph runner + repro), threads instead of Prefect tasks."""
    plan, before, changed = sequential_order(ws), lock_entries(ws), changed_stages(ws)
    deps = {i.name: i.deps for i in stages(ws)}

    def one(stage, upstream):
        if not must_ask_dvc(stage, changed, upstream.values()):
            return StageOutcome(stage, UP_TO_DATE)
        return repro(stage, ws)

    with ThreadPoolExecutor(limit) as pool:
        outs = run_graph(deps, plan, lambda s, up: pool.submit(one, s, up), lambda s, f: f.result(), limit)
    order_lock_entries(ws, before, plan)
    return {o.stage: o.status for o in outs}


@pytest.mark.slow  # four whole runs of the synthetic DAG: about half a minute on a quiet 2-core machine
def test_concurrent_branches_overlap_and_dvc_lock_equals_sequential_repro(tmp_path):
    conc = synthetic.make(tmp_path / "conc", work_s=2.0)
    seq = synthetic.copy(conc, tmp_path / "seq")
    synthetic.run([sys.executable, "-m", "dvc", "repro"], seq)  # DVC alone, one stage after the other

    # quantize@a and quantize@b contend for DVC's repo lock (reading the pipeline, writing dvc.lock)
    # while their commands overlap.
    assert set(_run_concurrently(conc).values()) == {RAN}
    (a,), (b,) = ([t for t in synthetic.timeline(conc) if t[0] == f"quantize@{v}"] for v in "ab")
    assert _overlap(a, b) > 1.0, f"commands did not run concurrently: {a} {b}"
    assert lock_entries(conc) == lock_entries(seq)
    assert (conc / "dvc.lock").read_bytes() == (seq / "dvc.lock").read_bytes()

    # Steady state: an edit to both variants, rerun concurrently vs by `dvc repro`: the same bytes again.
    for ws in (conc, seq):
        synthetic.set_variant(ws, "a", rev=1)
        synthetic.set_variant(ws, "b", rev=1)
    synthetic.run([sys.executable, "-m", "dvc", "repro"], seq)
    synthetic.clear_timeline(conc)
    status = _run_concurrently(conc)
    assert {s for s, v in status.items() if v == RAN} == {
        f"{k}@{v}{d}"
        for v in "ab"
        for k, d in (("quantize", ""), ("compile", ""), ("deploy", "-local"), ("soak", "-local"))
    }
    assert (conc / "dvc.lock").read_bytes() == (seq / "dvc.lock").read_bytes()


def test_busy_repo_lock_is_waited_for(tmp_path):
    ws = synthetic.make(tmp_path / "ws")
    holder = zc.lockfile.LockFile(str(ws / ".dvc/tmp/lock"))  # what a running `dvc` holds
    threading.Timer(3.0, holder.close).start()
    t0 = time.perf_counter()
    out = repro("prepare", ws, lock_retries=0)
    assert out.status == RAN and time.perf_counter() - t0 >= 3.0


def test_stage_busy_in_another_dvc_process_is_retried_with_backoff(tmp_path):
    ws = synthetic.make(tmp_path / "ws", work_s=4.0)
    synthetic.run([sys.executable, "-m", "dvc", "repro", "prepare"], ws)
    other = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--single-item", "quantize@a"],
        cwd=ws,
        env=synthetic_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        rw = ws / ".dvc/tmp/rwlock"
        deadline = time.monotonic() + 60
        while "quant" not in (rw.read_text() if rw.exists() else ""):  # the other process holds the stage
            assert other.poll() is None and time.monotonic() < deadline, "the other dvc repro never started"
            time.sleep(0.05)
        with pytest.raises(StageFailed, match=r"(?s)quantize@a: DVC.s lock .* stayed busy.*lock_retries"):
            repro("quantize@a", ws, lock_retries=0)
        waits: list[float] = []
        out = repro(
            "quantize@a",
            ws,
            lock_retries=8,
            lock_backoff_s=0.25,
            sleep=lambda s: (waits.append(s), time.sleep(s)),
        )
    finally:
        assert other.wait(60) == 0
    # The other process ran it; once it let go, DVC found nothing left to do.
    assert out.status == UP_TO_DATE and out.lock_waits >= 1
    assert waits[:3] == [0.25, 0.5, 1.0][: len(waits[:3])]


def test_failed_command_names_stage_cause_and_fix(tmp_path):
    ws = synthetic.make(tmp_path / "ws", variants={"a": {"fail": True}, "b": {}})
    repro("prepare", ws)
    with pytest.raises(StageFailed) as e:
        repro("quantize@a", ws)
    msg = str(e.value)
    assert msg.startswith("stage quantize@a failed") and "planted failure" in msg
    assert "dvc repro --single-item quantize@a" in msg


def synthetic_env() -> dict:
    from greenpipe.nightly.stages import dvc_env

    return dvc_env()
