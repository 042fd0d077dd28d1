"""Run DVC stages so that DVC decides what executes, several at once, without corrupting dvc.lock.

Why running stages concurrently through DVC is safe (DVC 3.x, checked against its source):

* ``dvc repro`` holds the repository lock (``.dvc/tmp/lock``) while it reads the pipeline, decides
  whether the stage changed, restores it from the run-cache, hashes its outputs and writes its
  ``dvc.lock`` entry; it *releases* that lock while the stage's command runs (``unlocked_repo`` in
  ``dvc/stage/run.py``) and takes it back afterwards. So commands of independent stages overlap, and
  every read-modify-write of ``dvc.lock`` is serialised.
* ``--wait-for-lock`` makes DVC wait for that lock instead of giving up after 3 s. Without it, the
  re-lock after a finished command could fail and throw the work away.
* DVC's per-path read/write lock (``.dvc/tmp/rwlock``) keeps a stage from writing what another reads
  or writes; it refuses at once ("is busy") rather than waiting. Independent stages of one DAG never
  overlap, so this only fires when another DVC process works on the same paths (yesterday's nightly
  still running, a person's ``dvc repro``); :func:`repro` then retries with backoff. Every refusal
  happens before DVC records anything, and a retry re-asks DVC, which restores from the run-cache
  what already ran, so a retry never corrupts or duplicates an entry.

DVC appends a stage that dvc.lock does not list yet where it finishes; :func:`order_lock_entries`
puts such new entries in the order a sequential ``dvc repro`` would have written them, so the file is
the same byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from greenpipe.errors import GreenpipeError

# DVC's own words when a lock is held by another process (dvc/lock.py, dvc/rwlock.py).
LOCK_BUSY = ("Unable to acquire lock", "is busy, it is being blocked by")

RAN, RESTORED, UP_TO_DATE, FAILED, SKIPPED = "ran", "restored", "up to date", "failed", "skipped"
EXECUTED = (RAN, RESTORED)  # outputs changed: dependents must ask DVC again


class StageFailed(GreenpipeError):
    """A stage's command failed, or DVC could not run it; the message says which and why."""


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage in a run."""

    stage: str
    status: str  # ran | restored (from DVC's run-cache) | up to date | failed | skipped
    seconds: float = 0.0  # wall time of this stage's last attempt (s)
    attempts: int = 0  # attempts of the stage (Prefect retries); 0 = not tried
    lock_waits: int = 0  # times DVC's lock was busy and the attempt was repeated
    detail: str = ""  # why it failed or was skipped

    def to_dict(self) -> dict:
        return asdict(self)


def dvc_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for DVC subprocesses: this interpreter's ``python`` first on PATH, no analytics."""
    env = dict(os.environ if base is None else base)
    # dvc.yaml's commands say `python`: make that the interpreter greenpipe runs in.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _classify(stage: str, out: str) -> str:
    if f"Running stage '{stage}'" in out:
        return RAN
    if f"Stage '{stage}' is cached" in out:
        return RESTORED
    return UP_TO_DATE


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _cause(out: str) -> str:
    # DVC's own verdict ("ERROR: failed to reproduce ...: exited with 1") is the most useful single line.
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    return errors[-1].removeprefix("ERROR: ") if errors else (out.strip().splitlines() or ["no output"])[-1]


def repro(
    stage: str,
    root: str | Path,
    *,
    lock_retries: int = 8,
    lock_backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> StageOutcome:
    """``dvc repro --single-item <stage>`` in ``root``; DVC decides whether the command runs.

    Retries up to ``lock_retries`` times when DVC reports its lock busy, waiting ``lock_backoff_s``
    seconds, doubled each time. Raises :class:`StageFailed` naming the stage and the cause.
    """
    root = Path(root)
    cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage]
    t0 = time.perf_counter()
    waits = 0
    while True:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=dvc_env(), check=False)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return StageOutcome(stage, _classify(stage, out), round(time.perf_counter() - t0, 2), 1, waits)
        if any(m in out for m in LOCK_BUSY):
            if waits < lock_retries:
                sleep(lock_backoff_s * 2**waits)
                waits += 1
                continue
            raise StageFailed(
                f"stage {stage}: DVC's lock in {root} stayed busy through {waits + 1} attempts "
                f"(another DVC process works on the same paths):\n{_tail(out, 8)}\n"
                "Wait for that process to finish, or raise nightly.lock_retries / lock_backoff_s "
                "in params.yaml."
            )
        raise StageFailed(
            f"stage {stage} failed (dvc exit {proc.returncode}): {_cause(out)}\n{_tail(out)}\n"
            f"Fix the cause above; to rerun it alone: dvc repro --single-item {stage}"
        )


def must_ask_dvc(stage: str, changed_at_start: Iterable[str], upstream: Iterable[StageOutcome]) -> bool:
    """Whether ``stage`` needs ``dvc repro``: DVC's status said changed, or an upstream stage rewrote outputs.

    A stage DVC called unchanged at the start stays unchanged unless something it depends on executed
    in this run, so for it no DVC process is started at all (that keeps a no-change night fast).
    """
    return stage in set(changed_at_start) or any(u.status in EXECUTED for u in upstream)


def _open_repo(root: Path, wait: bool = True):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root), _wait_for_lock=wait)
    except NotDvcRepoError:
        raise GreenpipeError(
            f"{root}: not a DVC repository (no .dvc/); run from the greenpipe checkout"
        ) from None


def changed_stages(root: str | Path) -> set[str]:
    """Names of dvc.yaml stages that DVC's status reports as changed (``dvc status``), under DVC's lock."""
    root = Path(root).resolve()
    repo = _open_repo(root)
    try:
        status = repo.status()
        names = set()
        for key in status:
            # keys: "stage", "stage@item", "dvc.yaml:stage" (other dvc.yaml files), "data.dvc" (not a stage)
            if key.endswith(".dvc"):
                continue
            names.add(key.split(":", 1)[-1])
        return names
    finally:
        repo.close()


def sequential_order(root: str | Path) -> list[str]:
    """The order a plain ``dvc repro`` evaluates the stages of ./dvc.yaml in (DVC's own planner)."""
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    root = Path(root).resolve()
    repo = _open_repo(root)
    try:
        with repo.lock:
            # An absolute target: DVC resolves a relative one against the current directory, not the repo.
            stages = collect_stages(repo, [str(root / "dvc.yaml")])
            steps = plan_repro(get_active_graph(repo.index.graph), stages)
            return [s.name for s in steps if str(getattr(s, "path", "")).endswith("dvc.yaml")]
    finally:
        repo.close()


def lock_entries(root: str | Path) -> list[str]:
    """Stage names in dvc.lock, in file order ([] when there is no dvc.lock)."""
    import yaml

    path = Path(root) / "dvc.lock"
    if not path.exists():
        return []
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}) or {})


def order_lock_entries(root: str | Path, before: list[str], plan: list[str]) -> bool:
    """Put dvc.lock entries in the order a sequential ``dvc repro`` writes them; True if it moved any.

    Entries listed in ``before`` (dvc.lock's order when the run started) keep their places, as DVC
    updates them in place; entries new in this run follow in ``plan`` order. Written with DVC's own
    YAML writer under DVC's lock, so the bytes are what DVC itself would write.
    """
    from dvc.utils.serialize import modify_yaml

    root = Path(root).resolve()
    path = root / "dvc.lock"
    if not path.exists():
        return False
    repo = _open_repo(root)
    try:
        with repo.lock:
            current = lock_entries(root)
            rank = {n: i for i, n in enumerate(plan)}
            old = [n for n in before if n in current]
            new = sorted((n for n in current if n not in before), key=lambda n: rank.get(n, len(rank)))
            if old + new == current:
                return False  # the usual night: every entry existed and was updated in place
            with modify_yaml(str(path)) as data:
                stages = data["stages"]
                items = [(n, stages[n]) for n in old + new]
                for n in current:
                    del stages[n]
                for n, v in items:
                    stages[n] = v
            return True
    finally:
        repo.close()


def _run_tool(cmd: list[str], root: Path, what: str, fix: str) -> str:
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=dvc_env(), check=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        shown = " ".join(cmd[cmd.index("dvc") if "dvc" in cmd else 0 :])
        raise GreenpipeError(
            f"{what} failed in {root} (`{shown}`, exit {proc.returncode}):\n{_tail(out, 12)}\n{fix}"
        )
    return out


def _remote_args(remote: str) -> list[str]:
    return ["-r", remote] if remote else []


def dvc_push(root: str | Path, remote: str = "") -> str:
    """``dvc push`` every output dvc.lock lists to ``remote`` ("" = default remote); returns DVC's output."""
    return _run_tool(
        [sys.executable, "-m", "dvc", "--wait-for-lock", "push", *_remote_args(remote)],
        Path(root),
        "dvc push",
        "Check the remote (`dvc remote list`, its credentials in the environment), set nightly.remote, "
        "or turn nightly.dvc_push off.",
    )


def dvc_pull(root: str | Path, remote: str = "") -> str:
    """``dvc pull`` (missing outputs are not an error: the run will make them)."""
    return _run_tool(
        [sys.executable, "-m", "dvc", "--wait-for-lock", "pull", "--allow-missing", *_remote_args(remote)],
        Path(root),
        "dvc pull",
        "Check the remote (`dvc remote list`, its credentials), set nightly.remote, "
        "or turn nightly.dvc_pull off.",
    )


def git_pull(root: str | Path) -> str:
    """``git pull --ff-only`` in ``root`` (never a merge: a diverged checkout is an error to look at)."""
    return _run_tool(
        ["git", "pull", "--ff-only"],
        Path(root),
        "git pull",
        "Make the checkout fast-forwardable (commit or drop local changes), or turn nightly.git_pull off.",
    )


def count_commands(outcomes: Iterable[StageOutcome]) -> int:
    """How many stage commands executed (DVC ran them; restores from the run-cache do not count)."""
    return sum(1 for o in outcomes if o.status == RAN)
