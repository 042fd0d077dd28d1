"""Quantization figures that hold from seed to seed: each variant's quality drop over several seeds.

    python benchmarks/quant_seeds.py                                 # ptq8 fastft8 qat8 qat4, seeds 0 1 2
    python benchmarks/quant_seeds.py --variants qat8 qat4 --seeds 0 1 2 3 4
    python benchmarks/quant_seeds.py --set base.profile=full --out runs/quant-seeds-full

Each (variant, seed) is a full ``python -m tasks.quantize`` run (the quantize
stage itself: the trained model under models/denoise, the calibration dump
under artifacts/calib, val scored on artifacts/prepared) with params.yaml plus
the ``--set`` overrides and ``base.seed`` set to that seed, in its own process.
The float model (``fp32``) is scored once: it does not depend on the seed.
The drop of a run is the float model's primary quality figure minus the
variant's (the quantize stage's fake-quant score on val, the same figure the
report's quantize table shows), so a positive drop is a loss.  Printed per
variant: every seed's drop, the median and the spread (min .. max), and the
goal it is held to (``--goal variant=dB``; defaults below).  A variant meets
its goal when the median drop is at most the goal.  Everything is measured on
this machine by the quantize stage; nothing is estimated.

Needs the train and calib_dump stages' outputs: ``dvc repro calib_dump``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.seed_spread import with_overrides  # noqa: E402
from greenpipe.io import read_json  # noqa: E402
from greenpipe.params import ParamsError, parse_params  # noqa: E402
# The quality drop each variant is held to (median over seeds, in the primary figure's unit).
GOALS = {"ptq8": 0.5, "fastft8": 0.3, "qat8": 0.15, "qat4": 1.0}


def quantize_run(raw: dict, variant: str, seed: int, run: Path, args: argparse.Namespace) -> dict:
    """One quantize-stage run of ``variant`` under ``seed``; return its metrics."""
    run.mkdir(parents=True, exist_ok=True)
    raw = {**raw, "base": {**raw["base"], "seed": seed}}
    (run / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "tasks.quantize", "--variant", variant, "--model", str(args.model),
           "--calib", str(args.calib), "--data", str(args.data), "--out", str(run / "out"),
           "--metrics", str(run / "metrics.json"), "--params", str(run / "params.yaml")]
    t0 = time.perf_counter()
    with open(run / "quantize.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"quant_seeds: {variant} seed {seed} failed (exit {done.returncode}); see {run / 'quantize.log'}")
    print(f"  {variant:<8} seed {seed}: {time.perf_counter() - t0:6.1f} s", flush=True)
    return read_json(run / "metrics.json")


def drop(float_metrics: dict, metrics: dict) -> float:
    """How much quality ``metrics`` lost against the float model (positive = worse)."""
    quality, reference = metrics["quality"], float_metrics["quality"]
    if quality["primary"] != reference["primary"]:
        sys.exit(f"quant_seeds: primary figures differ ({reference['primary']} vs {quality['primary']})")
    loss = reference["value"] - quality["value"]
    return loss if quality["higher_is_better"] else -loss


def parse_goals(items: list[str]) -> dict[str, float]:
    goals = dict(GOALS)
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError(item)
            goals[name] = float(value)
        except ValueError:
            sys.exit(f"quant_seeds: --goal {item!r}: expected variant=number, e.g. qat8=0.15")
    return goals


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=list(GOALS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a params override, repeatable")
    ap.add_argument("--goal", dest="goals", action="append", default=[], metavar="VARIANT=DROP",
                    help="the median drop a variant is held to, repeatable (defaults: "
                         + ", ".join(f"{k} {v:g}" for k, v in GOALS.items()) + ")")
    ap.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temp dir)")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--model", type=Path, default=ROOT / "models/denoise")
    ap.add_argument("--calib", type=Path, default=ROOT / "artifacts/calib")
    ap.add_argument("--data", type=Path, default=ROOT / "artifacts/prepared")
    args = ap.parse_args(argv)
    missing = [p for p in (args.model / "checkpoint.pt", args.calib, args.data) if not p.exists()]
    if missing:
        sys.exit(f"quant_seeds: {', '.join(map(str, missing))} missing; run `dvc repro calib_dump` first")
    if len(args.seeds) < 3:
        print(f"quant_seeds: {len(args.seeds)} seed(s): a spread over fewer than 3 seeds says little", file=sys.stderr)
    goals = parse_goals(args.goals)

    raw = with_overrides(yaml.safe_load(args.params.read_text()), args.assignments)
    try:
        params = parse_params(raw, f"{args.params} with --set {' '.join(args.assignments)}")
    except ParamsError as err:
        sys.exit(f"quant_seeds: {err}")
    unknown = sorted(set(args.variants) - set(params.quantize.variants))
    if unknown:
        sys.exit(f"quant_seeds: variant(s) {', '.join(unknown)} not in quantize.variants "
                 f"(params has: {', '.join(params.quantize.variants)})")
    out = args.out or Path(tempfile.mkdtemp(prefix="quant-seeds-"))
    print(f"quantize stage runs under {out} (profile {params.base.profile}, threads {params.base.threads})")

    reference = quantize_run(raw, "fp32", args.seeds[0], out / "fp32", args)
    unit = reference["quality"].get("unit", "")
    drops = {v: [drop(reference, quantize_run(raw, v, s, out / f"{v}-seed{s}", args)) for s in args.seeds]
             for v in args.variants}

    primary = reference["quality"]["primary"]
    print(f"\n{primary} drop against the float model ({reference['quality']['value']:.3f} {unit}), "
          f"fake-quant PyTorch on val, quantize stage, measured on this machine, profile {params.base.profile}")
    print(f"{'variant':<9}" + "".join(f"{'seed ' + str(s):>9}" for s in args.seeds)
          + f"{'median':>9}{'spread':>18}{'goal':>8}  verdict")
    for variant, values in drops.items():
        median = float(np.median(values))
        goal = goals.get(variant)
        verdict = "no goal" if goal is None else ("meets" if median <= goal else "misses")
        print(f"{variant:<9}" + "".join(f"{d:9.3f}" for d in values) + f"{median:9.3f}"
              f"{f'{min(values):.3f} .. {max(values):.3f}':>18}"
              + (f"{goal:8.2f}" if goal is not None else f"{'-':>8}") + f"  {verdict}")


if __name__ == "__main__":
    main()
