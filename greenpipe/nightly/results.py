"""Each night's figures, kept retrievable on a git branch of their own.

    rows = collect_rows(Path("metrics"))                  # {"ptq8-local": {"quality": ..., "fps": ..., ...}}
    sha = commit_results(root, "nightly-results", files, record, "nightly 2026-11-21: ok")
    base = last_good(root, "nightly-results")             # the last night whose record says "ok"

The commit is made with git's plumbing (a temporary index, ``commit-tree``, ``update-ref``), so the
checked-out branch, the index and the working tree are never touched. Each commit's tree is that
night only: dvc.lock, dvc.yaml, params.yaml, metrics/, the report, and ``nightly.json`` (the run
record: stages, rows, regressions, the source commit). ``git show nightly-results~3:nightly.json``
gives the figures of three nights ago; the data behind them is in the DVC remote, addressed by that
night's dvc.lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from greenpipe.errors import GreenpipeError
from greenpipe.io import read_json
from greenpipe.power.base import provenance
from greenpipe.report.text import number

RECORD = "nightly.json"
# Figures the gate and the summary table use, by source file: metrics/deploy/V-D.json, metrics/soak/V-D.json.
DEPLOY_KEYS = ("fps", "p90_ms")
SOAK_KEYS = {"mj_per_inference": "mj_per_inference", "avg_w": "avg_w", "fps": "soak_fps"}


def _row_name(path: Path, d: dict) -> str:
    variant = d.get("variant") or path.stem.rsplit("-", 1)[0]
    device = d.get("device_name") or path.stem.rsplit("-", 1)[-1]
    return f"{variant}-{device}"


def collect_rows(metrics: Path) -> dict[str, dict]:
    """``{"variant-device": {quality, quality_metric, quality_unit, quality_higher, fps, p90_ms,
    mj_per_inference, avg_w, soak_fps, power_measured, meter, meter_scope, power}}``.

    ``quality`` is the deploy stage's primary metric (its ``quality`` record: which metric, its unit,
    whether higher is better), with fps and p90 latency (ms); energy per inference (mJ), mean power (W)
    and the soak's own fps come from the soak stage. Every recipe's deploy and soak metrics count
    (``deploy/*.json`` and ``soak/*.json`` at any depth: ``metrics/deploy/``, ``metrics/video/deploy/``).
    ``meter`` / ``meter_scope`` name the soak's meter (the gate compares energy only between like
    meters) and ``power`` says how its figures were obtained (``measured``, ``imported``, ``ESTIMATE``:
    :func:`greenpipe.power.base.provenance`). Keys whose figure is absent are left out.
    """
    rows: dict[str, dict] = {}
    for path in sorted(metrics.glob("**/deploy/*.json")):
        d = read_json(path)
        row = rows.setdefault(_row_name(path, d), {})
        row.update({k: v for k in DEPLOY_KEYS if (v := number(d, k)) is not None})
        quality = d.get("quality")
        if isinstance(quality, dict) and number(quality, "value") is not None:
            row.update(quality=float(quality["value"]), quality_metric=str(quality["primary"]),
                       quality_unit=str(quality.get("unit", "")), quality_higher=bool(quality["higher_is_better"]))
    for path in sorted(metrics.glob("**/soak/*.json")):
        d = read_json(path)
        row = rows.setdefault(_row_name(path, d), {})
        row.update({dst: v for src, dst in SOAK_KEYS.items() if (v := number(d, src)) is not None})
        if isinstance(d.get("power_measured"), bool):
            row["power_measured"] = d["power_measured"]
        meter = d.get("meter")
        if isinstance(meter, dict) and meter.get("name"):
            row.update(meter=str(meter["name"]), meter_scope=str(meter.get("scope", "unknown")),
                       power=provenance(str(meter["name"]), row.get("power_measured")))
    return rows


def _git(
    root: Path, *args: str, env: dict | None = None, input: bytes | None = None, check: bool = True
) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, input=input, env=env, check=False)
    if check and proc.returncode != 0:
        raise GreenpipeError(
            f"git {' '.join(args[:3])} failed in {root} (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[-600:]}\n"
            "The nightly keeps its results on a git branch: run it in a git checkout with git on PATH."
        )
    return proc.stdout.decode(errors="replace").strip()


def _branch_head(root: Path, branch: str) -> str | None:
    out = _git(root, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}", check=False)
    return out or None


def source_commit(root: Path) -> str | None:
    """The checked-out commit the run used (None outside git or before the first commit)."""
    return _git(Path(root), "rev-parse", "--verify", "-q", "HEAD", check=False) or None


def result_files(root: Path) -> list[str]:
    """Paths (relative to ``root``) results commits hold: dvc.lock, dvc.yaml, params.yaml, metrics, report."""
    root = Path(root)
    files = [p for p in ("dvc.lock", "dvc.yaml", "params.yaml") if (root / p).is_file()]
    for folder in ("metrics", "reports/summary"):
        if (root / folder).is_dir():
            files += sorted(str(p.relative_to(root)) for p in (root / folder).rglob("*") if p.is_file())
    return files


def _identity_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A build host's service account often has no git identity; the commit must still be made.
    if not _git(root, "config", "user.email", check=False):
        env.setdefault("GIT_AUTHOR_NAME", "greenpipe nightly")
        env.setdefault("GIT_AUTHOR_EMAIL", "nightly@greenpipe.invalid")
        env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
        env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    return env


def commit_results(root: str | Path, branch: str, files: Iterable[str], record: dict, message: str) -> str:
    """Commit ``files`` plus ``record`` (as nightly.json) as the next commit of ``branch``; return its sha.

    The branch is created on first use; HEAD, the index and the working tree stay as they are.
    """
    root = Path(root).resolve()
    parent = _branch_head(root, branch)
    env = _identity_env(root)
    with tempfile.TemporaryDirectory(prefix="greenpipe-nightly-") as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")
        entries = []
        for rel in files:
            sha = _git(root, "hash-object", "-w", "--", rel, env=env)
            entries.append(f"100644 {sha}\t{rel}")
        blob = json.dumps(record, indent=2, sort_keys=True, default=str).encode() + b"\n"
        sha = _git(root, "hash-object", "-w", "--stdin", env=env, input=blob)
        entries.append(f"100644 {sha}\t{RECORD}")
        _git(
            root, "update-index", "--add", "--index-info", env=env, input=("\n".join(entries) + "\n").encode()
        )
        tree = _git(root, "write-tree", env=env)
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    commit = _git(root, *args, env=env)
    # Compare-and-swap: if another nightly moved the branch meanwhile, fail rather than drop its commit.
    _git(root, "update-ref", "-m", "greenpipe nightly", f"refs/heads/{branch}", commit, parent or "0" * 40)
    return commit


@dataclass(frozen=True)
class PastNight:
    """A nightly found on the results branch."""

    commit: str
    record: dict

    @property
    def label(self) -> str:
        when = self.record.get("started_at", "?")
        run = self.record.get("flow_run_name") or self.record.get("flow_run_id") or "?"
        return f"nightly {when} (run {run}, results commit {self.commit[:10]})"


def nights(root: str | Path, branch: str) -> Iterator[PastNight]:
    """Nights on ``branch``, newest first."""
    root = Path(root).resolve()
    if _branch_head(root, branch) is None:
        return
    for commit in _git(root, "rev-list", f"refs/heads/{branch}").split():
        raw = _git(root, "show", f"{commit}:{RECORD}", check=False)
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # not a nightly commit (someone committed by hand): not a baseline
        yield PastNight(commit, record)


def last_good(root: str | Path, branch: str) -> PastNight | None:
    """The newest night on ``branch`` whose run succeeded (every stage, no regression), or None."""
    return next((n for n in nights(root, branch) if n.record.get("status") == "ok"), None)
