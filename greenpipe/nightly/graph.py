"""Run a DAG of stages with at most N at once; a failure skips its dependents and nothing else.

    outcomes = run_graph(deps, order, submit, resolve, limit=2)

``deps`` maps each stage to the stages it needs; ``order`` is the preferred start order among ready
stages (DVC's sequential order, so a run with limit 1 is exactly ``dvc repro``). Stages that measure
(fps, energy) can be kept from overlapping anything (``alone``) or each other (``groups``). ``submit(stage,
upstream)`` starts a stage and returns a future (anything with ``add_done_callback``); ``resolve(stage,
future)`` turns the finished future into a :class:`StageOutcome`. The flow passes Prefect's task
``submit``; tests pass a thread pool's.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from greenpipe.errors import GreenpipeError
from greenpipe.nightly.stages import FAILED, SKIPPED, StageOutcome


class Scheduler:
    """Which stages may start now, given what finished; pure bookkeeping, no threads."""

    def __init__(
        self,
        deps: Mapping[str, Sequence[str]],
        order: Sequence[str],
        alone: Iterable[str] = (),
        groups: Mapping[str, str] | None = None,
    ) -> None:
        unknown = sorted({d for ds in deps.values() for d in ds} - set(deps))
        if unknown:
            raise GreenpipeError(f"stage graph: dependencies {unknown} are not stages of the graph")
        self.deps = {s: tuple(ds) for s, ds in deps.items()}
        rank = {s: i for i, s in enumerate(order)}
        self.order = sorted(deps, key=lambda s: (rank.get(s, len(rank)), s))
        self.dependents: dict[str, list[str]] = {s: [] for s in deps}
        for s, ds in self.deps.items():
            for d in ds:
                self.dependents[d].append(s)
        self.started: set[str] = set()
        self.outcomes: dict[str, StageOutcome] = {}
        self.alone = set(alone)  # stages that run with no other stage running (measurements on this host)
        self.groups = dict(groups or {})  # stages of one group never overlap (measurements on one device)

    def ready(self) -> list[str]:
        """Stages not started whose dependencies all finished without failing, in preferred order."""
        return [
            s for s in self.order
            if s not in self.started and s not in self.outcomes
            and all(self._succeeded(d) for d in self.deps[s])
        ]  # fmt: skip

    def _succeeded(self, stage: str) -> bool:
        return stage in self.outcomes and self.outcomes[stage].status not in (FAILED, SKIPPED)

    def startable(self, running: Iterable[str], limit: int) -> list[str]:
        """Ready stages that may start beside ``running`` without passing ``limit`` or a constraint.

        A stage in ``alone`` starts only when nothing runs, and nothing starts beside it; other stages
        go ahead of it meanwhile, so compute keeps both cores busy and measurements come when it drains.
        """
        busy = list(running)
        picked: list[str] = []
        for s in self.ready():
            if len(busy) >= limit or any(b in self.alone for b in busy):
                break
            if s in self.alone:
                if not busy:
                    picked.append(s)
                    busy.append(s)
                continue
            g = self.groups.get(s)
            if g is not None and any(self.groups.get(b) == g for b in busy):
                continue
            picked.append(s)
            busy.append(s)
        return picked

    def start(self, stage: str) -> None:
        self.started.add(stage)

    def finish(self, outcome: StageOutcome) -> list[StageOutcome]:
        """Record ``outcome``; if it failed, mark every stage downstream skipped and return those."""
        self.outcomes[outcome.stage] = outcome
        if outcome.status != FAILED:
            return []
        skipped = []
        todo = list(self.dependents[outcome.stage])
        while todo:
            s = todo.pop()
            if s in self.outcomes:
                continue
            o = StageOutcome(s, SKIPPED, detail=f"not run: upstream stage {outcome.stage} failed")
            self.outcomes[s] = o
            skipped.append(o)
            todo.extend(self.dependents[s])
        return skipped

    @property
    def done(self) -> bool:
        return len(self.outcomes) == len(self.deps)

    def upstream(self, stage: str) -> dict[str, StageOutcome]:
        return {d: self.outcomes[d] for d in self.deps[stage]}


def run_graph(
    deps: Mapping[str, Sequence[str]],
    order: Sequence[str],
    submit: Callable[[str, dict[str, StageOutcome]], Any],
    resolve: Callable[[str, Any], StageOutcome],
    limit: int = 2,
    alone: Iterable[str] = (),
    groups: Mapping[str, str] | None = None,
) -> list[StageOutcome]:
    """Run every stage once its dependencies succeeded, ``limit`` at a time; outcomes in ``order``.

    ``alone`` and ``groups``: see :meth:`Scheduler.startable`.
    """
    if limit < 1:
        raise GreenpipeError(f"concurrency limit {limit}: expected at least 1 (nightly.concurrency)")
    sched = Scheduler(deps, order, alone, groups)
    finished: queue.Queue[str] = queue.Queue()
    running: dict[str, Any] = {}
    while not sched.done:
        for stage in sched.startable(running, limit):
            sched.start(stage)
            future = submit(stage, sched.upstream(stage))
            running[stage] = future
            future.add_done_callback(lambda _f, s=stage: finished.put(s))
        if not running:  # nothing runs and nothing can start: only possible with a cycle
            left = sorted(set(deps) - set(sched.outcomes))
            raise GreenpipeError(f"stage graph has a cycle among {left}; check dvc.yaml (`dvc dag`)")
        stage = finished.get()
        sched.finish(resolve(stage, running.pop(stage)))
    return [sched.outcomes[s] for s in sched.order]
