"""The results branch: commits that never touch the checkout, and the last good night found again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from greenpipe.nightly.results import collect_rows, commit_results, last_good, nights, result_files


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@greenpipe.invalid")
    _git(repo, "config", "user.name", "t")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    (repo / "code.py").write_text("print(1)\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "code")
    for name, psnr in (("ptq8-local", 30.5), ("fp32-local", 31.0)):
        (repo / "metrics/deploy").mkdir(parents=True, exist_ok=True)
        row = {"fps": 90.0, "score": psnr,
               "quality": {"primary": "score", "value": psnr, "higher_is_better": True, "unit": "dB",
                           "values": {"score": psnr}}}
        (repo / f"metrics/deploy/{name}.json").write_text(json.dumps(row))
    (repo / "metrics/soak").mkdir()
    (repo / "metrics/soak/ptq8-local.json").write_text(
        json.dumps(
            {
                "variant": "ptq8",
                "device_name": "local",
                "mj_per_inference": 357.2,
                "fps": 84.0,
                "power_measured": False,
                "meter": {"name": "estimate", "scope": "estimate", "measured": False},
            }
        )
    )
    (repo / "code.py").write_text("print(2)\n")  # an uncommitted edit the nightly must leave alone
    _git(repo, "add", "code.py")  # ... and a staged one
    (repo / "scratch.txt").write_text("untracked\n")
    return repo


def test_collect_rows_joins_deploy_and_soak(tmp_path):
    rows = collect_rows(_repo(tmp_path) / "metrics")
    assert rows["ptq8-local"] == {
        "quality": 30.5,
        "quality_metric": "score",
        "quality_unit": "dB",
        "quality_higher": True,
        "fps": 90.0,
        "mj_per_inference": 357.2,
        "soak_fps": 84.0,
        "power_measured": False,
        "meter": "estimate",
        "meter_scope": "estimate",
        "power": "ESTIMATE",
    }
    assert "mj_per_inference" not in rows["fp32-local"]


def test_commits_leave_head_index_and_worktree_alone(tmp_path):
    repo = _repo(tmp_path)
    before = (
        _git(repo, "rev-parse", "HEAD"),
        _git(repo, "status", "--porcelain"),
        (repo / ".git/index").read_bytes(),
        _git(repo, "symbolic-ref", "HEAD"),
    )
    files = result_files(repo)
    assert files == [
        "dvc.lock",
        "metrics/deploy/fp32-local.json",
        "metrics/deploy/ptq8-local.json",
        "metrics/soak/ptq8-local.json",
    ]
    first = commit_results(repo, "nightly-results", files, {"status": "ok", "rows": {"x": 1}}, "night 1")
    second = commit_results(repo, "nightly-results", files, {"status": "failed"}, "night 2")
    after = (
        _git(repo, "rev-parse", "HEAD"),
        _git(repo, "status", "--porcelain"),
        (repo / ".git/index").read_bytes(),
        _git(repo, "symbolic-ref", "HEAD"),
    )
    assert after == before
    assert _git(repo, "rev-list", "nightly-results").split() == [second, first]
    # Each night's tree is that night only: the results files plus its record, not the code.
    assert _git(repo, "ls-tree", "-r", "--name-only", first).split() == sorted(files + ["nightly.json"])
    assert json.loads(_git(repo, "show", f"{first}:metrics/deploy/ptq8-local.json"))["score"] == 30.5
    assert [n.commit for n in nights(repo, "nightly-results")] == [second, first]
    good = last_good(repo, "nightly-results")
    assert good.commit == first and good.record["rows"] == {"x": 1}  # the failed night is not a baseline
    assert first[:10] in good.label


def test_no_branch_no_baseline(tmp_path):
    assert last_good(_repo(tmp_path), "nightly-results") is None
