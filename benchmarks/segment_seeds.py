"""HRNetV2 vs UNet on the segment recipe's data, same training budget, over several seeds.

    python benchmarks/segment_seeds.py                       # params.yaml as it is, seeds 0 1 2
    python benchmarks/segment_seeds.py --seeds 0 1 2 3 --jobs 2
    python benchmarks/segment_seeds.py --set segment.train.steps_per_epoch=200   # params.yaml with overrides

Each (network, seed) is a full ``python -m tasks.train --recipe segment --net N`` run (the
segment_train stage itself, on the prepared data under artifacts/segment/data: run
``dvc repro segment_validate`` first) with params.yaml and that ``base.seed``, in its own
process and its own output folder.  It prints every run's float val mIoU and pixel accuracy
(the train stage's final whole-image evaluation), the mean and spread per network, and the
goal: HRNetV2 mIoU >= UNet mIoU + 0.05.  Measured on this machine; nothing is estimated.
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
import yaml

from greenpipe.io import read_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.seed_spread import with_overrides  # noqa: E402


def run(net: str, seed: int, work: Path, data: Path, validated: Path, assignments: list[str]) -> dict:
    raw = with_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), assignments)
    raw["base"]["seed"] = seed
    params = work / f"params_{net}_{seed}.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = work / f"{net}_{seed}"
    cmd = [sys.executable, "-m", "tasks.train", "--recipe", "segment", "--net", net, "--data", str(data),
           "--validated", str(validated), "--out", str(out), "--metrics", str(out / "train.json"),
           "--curve", str(out / "curve.csv"), "--resume-state", str(out / "resume.pt"), "--params", str(params)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode:
        sys.exit(f"{net} seed {seed} failed:\n{proc.stderr[-2000:]}")
    return {"net": net, "seed": seed, **read_json(out / "train.json")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nets", nargs="+", default=["unet", "hrnet"])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "artifacts/segment/data")
    ap.add_argument("--validated", type=Path, default=ROOT / "metrics/segment/validate.json")
    ap.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a params.yaml value for every run (repeatable)")
    args = ap.parse_args()
    if args.assignments:
        print(f"params.yaml with {', '.join(args.assignments)}")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        jobs = [(n, s) for s in args.seeds for n in args.nets]
        rows = list(pool.map(lambda j: run(*j, Path(tmp), args.data, args.validated, args.assignments), jobs))
    print(f"{'net':8} {'seed':>4} {'mIoU':>7} {'pix acc':>8} {'params M':>9} {'train s':>8}")
    for r in rows:
        print(f"{r['net']:8} {r['seed']:>4} {r['val_miou']:7.3f} {r['val_pixel_acc']:8.3f} {r['params_m']:9.3f} "
              f"{r['wall_s']:8.0f}")
    means = {}
    for net in args.nets:
        m = np.array([r["val_miou"] for r in rows if r["net"] == net])
        means[net] = m.mean()
        print(f"{net}: mIoU {m.mean():.3f} +- {m.std(ddof=1) if len(m) > 1 else 0:.3f} (mean +- sd over "
              f"{len(m)} seeds; float PyTorch model, whole val images)")
    if {"unet", "hrnet"} <= set(means):
        gap = means["hrnet"] - means["unet"]
        print(f"goal HRNetV2 >= UNet + 0.05 mIoU: gap {gap:+.3f} -> {'met' if gap >= 0.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
