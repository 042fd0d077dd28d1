"""The stage scheduler: dependency order, the concurrency limit, failures that skip only their dependents."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.nightly.graph import Scheduler, run_graph
from greenpipe.nightly.stages import FAILED, RAN, SKIPPED, StageOutcome, must_ask_dvc

# greenpipe's shape: one prepare, two variant chains, one report over both.
DEPS = {
    "prepare": (),
    "quantize@a": ("prepare",), "quantize@b": ("prepare",),
    "compile@a": ("quantize@a",), "compile@b": ("quantize@b",),
    "deploy@a-local": ("compile@a",), "deploy@b-local": ("compile@b",),
    "report": ("deploy@a-local", "deploy@b-local"),
}  # fmt: skip
ORDER = list(DEPS)


def _run(fail: set[str] = frozenset(), limit: int = 2, work_s: float = 0.05):
    live, peak, lock, started = [0], [0], threading.Lock(), []

    def stage(name: str) -> StageOutcome:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            started.append(name)
        time.sleep(work_s)
        with lock:
            live[0] -= 1
        if name in fail:
            raise RuntimeError(f"{name} broke")
        return StageOutcome(name, RAN, work_s, 1)

    def resolve(name, fut):
        try:
            return fut.result()
        except RuntimeError as exc:
            return StageOutcome(name, FAILED, 0.0, 1, detail=str(exc))

    with ThreadPoolExecutor(8) as pool:
        out = run_graph(DEPS, ORDER, lambda s, up: pool.submit(stage, s), resolve, limit)
    return {o.stage: o for o in out}, peak[0], started


def test_every_stage_runs_after_its_dependencies_within_the_limit():
    outcomes, peak, started = _run(limit=2)
    assert all(o.status == RAN for o in outcomes.values())
    for s, deps in DEPS.items():
        assert all(started.index(d) < started.index(s) for d in deps), s
    assert peak == 2  # both chains overlap, never more than the limit


def test_limit_one_is_the_sequential_order():
    _, peak, started = _run(limit=1, work_s=0.01)
    assert peak == 1 and started == ORDER


def test_failure_skips_only_dependents():
    outcomes, _, _ = _run(fail={"quantize@b"})
    assert outcomes["quantize@b"].status == FAILED
    skipped = {s for s, o in outcomes.items() if o.status == SKIPPED}
    assert skipped == {"compile@b", "deploy@b-local", "report"}
    assert all(outcomes[s].status == RAN for s in ("prepare", "quantize@a", "compile@a", "deploy@a-local"))
    assert "quantize@b failed" in outcomes["report"].detail


def test_cycle_and_unknown_dependency_are_errors_naming_the_stages():
    with pytest.raises(GreenpipeError, match="not stages"):
        Scheduler({"a": ("ghost",)}, ["a"])
    with pytest.raises(GreenpipeError, match="cycle"):
        run_graph({"a": ("b",), "b": ("a",)}, ["a", "b"], lambda s, u: None, lambda s, f: None)


def test_dvc_is_asked_only_when_status_changed_or_upstream_executed():
    up = [StageOutcome("x", "up to date")]
    assert not must_ask_dvc("s", set(), up)
    assert must_ask_dvc("s", {"s"}, up)
    assert must_ask_dvc("s", set(), [StageOutcome("x", RAN)])
    assert must_ask_dvc("s", set(), [StageOutcome("x", "restored")])


def test_local_measurements_run_alone_and_device_measurements_never_overlap():
    from greenpipe.nightly.measure import constraints, device_of

    devices = {"local": "local", "vck-5000": "vck-host"}  # device -> host, as in params.yaml
    assert (
        device_of("soak@ptq8-vck-5000", devices) == "vck-5000"
        and device_of("compile@ptq8-cpu", devices) is None
    )
    alone, groups = constraints(
        ["deploy@a-local", "soak@a-local", "deploy@a-vck-5000", "soak@b-vck-5000", "quantize@a"], devices
    )
    assert alone == {"deploy@a-local", "soak@a-local"}
    assert groups == {"deploy@a-vck-5000": "device:vck-5000", "soak@b-vck-5000": "device:vck-5000"}

    deps = {
        "q@a": (),
        "q@b": (),
        "deploy@a-local": ("q@a",),
        "soak@a-local": ("q@a",),
        "deploy@a-vck": ("q@a",),
        "soak@b-vck": ("q@b",),
    }
    sched = Scheduler(
        deps,
        list(deps),
        alone={"deploy@a-local", "soak@a-local"},
        groups={"deploy@a-vck": "vck", "soak@b-vck": "vck"},
    )
    assert sched.startable([], 4) == ["q@a", "q@b"]
    sched.start("q@a"), sched.start("q@b")
    sched.finish(StageOutcome("q@a", RAN))
    # q@b still runs: local measurements wait, the remote one may go (one per device).
    assert sched.startable(["q@b"], 4) == ["deploy@a-vck"]
    sched.finish(StageOutcome("q@b", RAN))
    assert sched.startable([], 4) == ["deploy@a-local"]  # alone: nothing beside it
    assert sched.startable(["deploy@a-vck"], 4) == []  # a remote device busy: local ones wait ...
    assert sched.startable(["deploy@a-local"], 4) == []  # ... and nothing joins a local one


def test_alone_stages_are_never_concurrent_in_a_run():
    intervals, lock = {}, threading.Lock()

    def stage(name):
        t0 = time.perf_counter()
        time.sleep(0.03)
        with lock:
            intervals[name] = (t0, time.perf_counter())
        return StageOutcome(name, RAN)

    alone = {"deploy@a-local", "deploy@b-local"}
    with ThreadPoolExecutor(8) as pool:
        run_graph(DEPS, ORDER, lambda s, up: pool.submit(stage, s), lambda s, f: f.result(), 4, alone)
    for a in alone:
        for other, (s, e) in intervals.items():
            if other != a:
                assert e <= intervals[a][0] or s >= intervals[a][1], f"{other} overlapped {a}"
