"""Real gain or seed noise? Train the UNet under several seeds and compare it with non-local means.

    python benchmarks/seed_spread.py                                   # params.yaml as it is, seeds 0-3
    python benchmarks/seed_spread.py --set train.epochs=21 --seeds 0 1
    python benchmarks/seed_spread.py --set train.loss=l1 --jobs 1 --out runs/l1
    python benchmarks/seed_spread.py --self-ensemble 1                 # single passes only

Each seed is a full ``python -m tasks.train`` run (the train stage itself, on
the prepared data under artifacts/prepared, with params.yaml plus the
``--set`` overrides and that seed), in its own process; ``--jobs`` runs share
the machine's cores.  Every checkpoint is then scored per image on the whole
val images (float PyTorch, as the train stage scores it) beside non-local
means at the strength the ``baseline`` stage tuned (metrics/baseline.json).
The last lines give the mean and spread over seeds and how many seeds beat
NLM: on three val images, one seed's figure moves by tenths of a dB with the
initial weights alone, so compare recipes on the mean, not on one run.  With
``--self-ensemble N`` (default 8, as ``deploy.self_ensemble``) every
checkpoint is also scored as an N-pass self-ensemble (greenpipe/runtime/
ensemble.py), a second table with its own mean and spread.
Everything is measured on this machine; nothing is estimated.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import yaml

from greenpipe.data.prepared import load_split
from greenpipe.io import read_json
from greenpipe.params import ParamsError, parse_params
from greenpipe.recipes.base import model_from_checkpoint
from greenpipe.recipes.denoise import denoise_image
from greenpipe.recipes.denoise.metrics import psnr
from greenpipe.runtime.ensemble import PASSES, SelfEnsemble

ROOT = Path(__file__).resolve().parent.parent


def with_overrides(raw: dict, assignments: list[str]) -> dict:
    """``raw`` params with ``section.key=value`` assignments applied (values parsed as YAML)."""
    for item in assignments:
        dotted, sep, value = item.partition("=")
        if not sep or not dotted:
            sys.exit(f"seed_spread: --set {item!r}: expected section.key=value, e.g. train.epochs=21")
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)
    return raw


def train_seed(raw: dict, seed: int, threads: int, run: Path, data: Path, validated: Path) -> Path:
    """One train-stage run of ``raw`` params under ``seed``; return its checkpoint."""
    run.mkdir(parents=True, exist_ok=True)
    raw = {**raw, "base": {**raw["base"], "seed": seed, "threads": threads}}
    (run / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "tasks.train", "--data", str(data), "--validated", str(validated),
           "--out", str(run), "--metrics", str(run / "metrics.json"), "--curve", str(run / "curve.csv"),
           "--resume-state", str(run / "resume.pt"), "--params", str(run / "params.yaml")]
    with open(run / "train.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"seed_spread: seed {seed} failed (exit {done.returncode}); see {run / 'train.log'}")
    return run / "checkpoint.pt"


class _Float:
    """A checkpoint's float model as a Runner (what SelfEnsemble wraps)."""

    def __init__(self, checkpoint: Path):
        self.net, _ = model_from_checkpoint(checkpoint)

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.from_numpy(x)).numpy()


def per_image_psnr(checkpoint: Path, val: list, passes: int = 1) -> list[float]:
    net = _Float(checkpoint)
    run = SelfEnsemble(net, passes).run
    return [psnr(clean, denoise_image(run, noisy, net.net.config.multiple)) for _, clean, noisy in val]


def print_table(title: str, names: list[str], nlm: list[float], seeds: list[int], scores: list[list[float]]) -> None:
    """Per-image PSNR of every seed beside NLM, then the mean and spread over seeds."""
    means = [float(np.mean(s)) for s in scores]
    print(f"\n{title}\n{'run':<8}" + "".join(f"{n:>14}" for n in names) + f"{'mean':>9}")
    print(f"{'NLM':<8}" + "".join(f"{v:14.2f}" for v in nlm) + f"{np.mean(nlm):9.3f}")
    for seed, row, mean in zip(seeds, scores, means):
        print(f"{'seed ' + str(seed):<8}" + "".join(f"{v:14.2f}" for v in row) + f"{mean:9.3f}")
    spread = f" +- {np.std(means, ddof=1):.3f} (sample std)" if len(means) > 1 else ""
    print(f"UNet mean over {len(means)} seed(s): {np.mean(means):.3f} dB{spread}, min {min(means):.3f}, "
          f"max {max(means):.3f}; NLM {np.mean(nlm):.3f} dB; seeds beating NLM: "
          f"{sum(m > np.mean(nlm) for m in means)} of {len(means)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a params override, repeatable")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (they split the cores)")
    ap.add_argument("--self-ensemble", type=int, default=8, choices=PASSES,
                    help="also score every checkpoint averaged over this many flips / rotations (1 = not)")
    ap.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temp dir)")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--data", type=Path, default=ROOT / "artifacts/prepared")
    ap.add_argument("--validated", type=Path, default=ROOT / "metrics/validate.json")
    ap.add_argument("--baseline", type=Path, default=ROOT / "metrics/baseline.json")
    args = ap.parse_args(argv)
    missing = [p for p in (args.data, args.validated, args.baseline) if not p.exists()]
    if missing:
        sys.exit(f"seed_spread: {', '.join(map(str, missing))} missing; "
                 "run `dvc repro validate baseline` first")

    raw = with_overrides(yaml.safe_load(args.params.read_text()), args.assignments)
    try:
        parse_params(raw, f"{args.params} with --set {' '.join(args.assignments)}")  # before any training
    except ParamsError as err:
        sys.exit(f"seed_spread: {err}")
    samples = load_split(args.data, "val")
    names = [p.name for p in samples]
    nlm_rows = {r["name"]: r["psnr"] for r in read_json(args.baseline)["nlm"]["per_image"]}
    unscored = sorted(set(names) - set(nlm_rows))
    if unscored:
        sys.exit(f"seed_spread: {args.baseline} has no NLM score for val image(s) {', '.join(unscored)}: "
                 "it predates this data; run `dvc repro baseline`")
    out = args.out or Path(tempfile.mkdtemp(prefix="seed-spread-"))
    jobs = max(1, min(args.jobs, len(args.seeds)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"training seeds {args.seeds}, {jobs} at a time, {threads} thread(s) each, into {out}"
          + (f"; overrides: {' '.join(args.assignments)}" if args.assignments else ""), flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        checkpoints = list(pool.map(
            lambda s: train_seed(raw, s, threads, out / f"seed-{s}", args.data, args.validated), args.seeds))

    torch.set_num_threads(os.cpu_count() or 1)
    val = [(p.name, *p.load()) for p in samples]
    nlm = [nlm_rows[name] for name in names]
    print_table("single pass", names, nlm, args.seeds, [per_image_psnr(c, val) for c in checkpoints])
    if args.self_ensemble > 1:
        n = args.self_ensemble
        print_table(f"x{n} self-ensemble (mean over {n} flips / rotations, {n}x the compute)", names, nlm,
                    args.seeds, [per_image_psnr(c, val, n) for c in checkpoints])
    print(f"measured on this CPU: float UNet checkpoints under {out} (PyTorch, whole val images, PSNR in dB);"
          f" NLM from {args.baseline} (scikit-image at the strength tuned on train crops)")


if __name__ == "__main__":
    main()
