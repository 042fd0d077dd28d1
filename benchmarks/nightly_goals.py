"""Measure the nightly run's goals (issue 6) and print the figures.

    .venv/bin/python benchmarks/nightly_goals.py                 # all four, real DAG included (minutes)
    .venv/bin/python benchmarks/nightly_goals.py --skip-chain    # without rerunning the ptq8 chain
    .venv/bin/python benchmarks/nightly_goals.py --work-s 10     # seconds of work per branch (default 20)

Run it from the repository root after `make demo` (dvc.lock and the DVC cache complete). It changes
nothing in this checkout: the real DAG runs in a `git clone` of HEAD in a temp dir with a copy of
the DVC cache; the concurrency and dvc.lock figures use the synthetic project of
tests/nightly/synthetic.py. A Prefect server is started on loopback unless PREFECT_API_URL is set.

1. No-change nightly on the real DAG, server already running: stage commands executed (goal 0) and
   wall seconds of the whole flow run (goal <= 20).
2. One variant's param changed (ptq8: act_calibration minmax, no bias correction): the stages whose
   command ran (goal: exactly quantize@ptq8 -> compile@ptq8-cpu -> deploy/soak@ptq8-<device> -> report).
3. Two independent equal branches (quantize@a, quantize@b, `--work-s` seconds each, CPU-bound busy
   loop and sleep; then compile, deploy, soak of each, instant commands): stage-phase wall seconds
   with nightly.concurrency 2 vs 1 (goal ratio <= 0.65). By default with nightly.measure_alone off:
   the branches' measuring stages may overlap too; --measure-alone runs them one at a time, as shipped.
4. dvc.lock after a concurrent nightly vs after a plain sequential `dvc repro` of a twin project:
   byte-identical (goal: yes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.nightly import nightly
from greenpipe.farm.prefect_server import LocalPrefect
from greenpipe.nightly.stages import dvc_env
from tests.nightly import synthetic

NIGHTLY_PARAMS = "nightly.params.yaml"  # the clone's params.yaml plus this checkout's nightly section


def _sh(cmd: list[str], cwd: Path) -> str:
    return synthetic.run(cmd, cwd)


def _run_night(ws: Path, api: str, params: str = "params.yaml") -> tuple[float, dict]:
    t0 = time.perf_counter()
    with temporary_settings({PREFECT_API_URL: api}):
        state = nightly(root=str(ws), params=params, return_state=True)
    wall = time.perf_counter() - t0
    record = state.result(raise_on_failure=False)
    if not isinstance(record, dict):
        raise SystemExit(f"nightly in {ws} failed without a record: {record!r}")
    if state.is_failed():
        print(f"  (flow ended {state.name}: {state.message})")
    return wall, record


def _ran(record: dict) -> list[str]:
    return [s["stage"] for s in record["stages"] if s["status"] == "ran"]


def real_dag(tmp: Path, api: str, skip_chain: bool) -> None:
    ws = tmp / "clone"
    _sh(["git", "clone", "-q", "--local", str(ROOT), str(ws)], tmp)
    shutil.copytree(ROOT / ".dvc" / "cache", ws / ".dvc" / "cache")
    _sh([sys.executable, "-m", "dvc", "checkout", "-q"], ws)
    # Stages validate params.yaml with the clone's own code, so the nightly section goes to a side file.
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["nightly"] = {
        **yaml.safe_load((ROOT / "params.yaml").read_text()).get("nightly", {}),
        "dvc_push": False,
    }
    (ws / NIGHTLY_PARAMS).write_text(yaml.safe_dump(raw, sort_keys=False))
    _sh(["git", "config", "user.email", "bench@greenpipe.invalid"], ws)
    _sh(["git", "config", "user.name", "greenpipe benchmark"], ws)
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status"],
        cwd=ws,
        capture_output=True,
        text=True,
        check=False,
        env=dvc_env(),
    ).stdout.strip()
    print(f"clone of HEAD; dvc status before the runs: {status.splitlines()[0] if status else '?'}")
    _run_night(ws, api, NIGHTLY_PARAMS)  # warm-up: DVC hashes the copied outputs once (its state db is new)
    wall, record = _run_night(ws, api, NIGHTLY_PARAMS)
    n = len(record["stages"])
    print(
        f"1. no-change nightly, real DAG ({n} stages): {record['commands_run']} stage command(s) ran, "
        f"flow wall {wall:.1f} s (stage phase {record['stages_s']:.1f} s)   goal: 0 commands, <= 20 s"
    )
    if skip_chain:
        return
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["quantize"]["variants"]["ptq8"].update(act_calibration="minmax", bias_correction=False)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    raw["quantize"] = params["quantize"]
    (ws / NIGHTLY_PARAMS).write_text(yaml.safe_dump(raw, sort_keys=False))
    wall, record = _run_night(ws, api, NIGHTLY_PARAMS)
    print(f"2. after a ptq8 param change: ran {', '.join(_ran(record))} in {wall:.1f} s")


def concurrency(tmp: Path, api: str, work_s: float, measure_alone: bool) -> None:
    for burn in (True, False):
        ws = synthetic.make(tmp / f"branches-{'cpu' if burn else 'sleep'}", work_s=work_s, burn=burn)
        _run_night(ws, api)  # builds everything once
        walls = {}
        for rev, limit in ((1, 1), (2, 2)):
            params = yaml.safe_load((ws / "params.yaml").read_text())
            params["nightly"]["concurrency"] = limit
            params["nightly"]["measure_alone"] = measure_alone
            (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            for v in "ab":
                synthetic.set_variant(ws, v, rev=rev)
            _, record = _run_night(ws, api)
            assert sorted(_ran(record)) == sorted(
                f"{k}@{v}{d}"
                for v in "ab"
                for k, d in (("quantize", ""), ("compile", ""), ("deploy", "-local"), ("soak", "-local"))
            ), _ran(record)
            walls[limit] = record["stages_s"]
        kind = ("CPU-bound (busy loop)" if burn else "waiting (sleep)") + (
            ", deploy/soak alone" if measure_alone else ""
        )
        print(
            f"3. two equal branches, {work_s:g} s {kind} each: sequential {walls[1]:.1f} s, "
            f"concurrent {walls[2]:.1f} s, ratio {walls[2] / walls[1]:.2f}   goal: <= 0.65"
        )


def lock_identity(tmp: Path, api: str) -> None:
    conc = synthetic.make(tmp / "lock-conc", work_s=1.0)
    seq = synthetic.copy(conc, tmp / "lock-seq")
    _run_night(conc, api)
    _sh([sys.executable, "-m", "dvc", "repro"], seq)
    same = (conc / "dvc.lock").read_bytes() == (seq / "dvc.lock").read_bytes()
    print(f"4. dvc.lock after a concurrent nightly == after sequential `dvc repro`, byte for byte: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--skip-chain", action="store_true", help="skip goal 2 (reruns the real ptq8 chain: minutes)"
    )
    ap.add_argument("--skip-real", action="store_true", help="skip goals 1 and 2 (the real DAG)")
    ap.add_argument(
        "--skip-synthetic", action="store_true", help="skip goals 3 and 4 (the synthetic project)"
    )
    ap.add_argument(
        "--measure-alone",
        action="store_true",
        help="goal 3 with nightly.measure_alone on (deploy/soak of each branch serialised, as shipped)",
    )
    ap.add_argument("--work-s", type=float, default=20.0, help="seconds of work per branch for goal 3")
    args = ap.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    print(
        f"{os.cpu_count()} CPU(s); load average {os.getloadavg()[0]:.1f} "
        "(figures are noisy on a busy machine)"
    )
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="greenpipe-nightly-bench-")))
        api = os.environ.get("PREFECT_API_URL")
        if not api:
            server = LocalPrefect(tmp / "prefect")
            api = server.start()
            stack.callback(server.stop)
            print(f"loopback Prefect server up in {server.startup_s:.1f} s (not counted below)")
        if not args.skip_real:
            real_dag(tmp, api, args.skip_chain)
        if not args.skip_synthetic:
            concurrency(tmp, api, args.work_s, args.measure_alone)
            lock_identity(tmp, api)


if __name__ == "__main__":
    main()
