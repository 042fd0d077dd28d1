"""Peak resident memory of one segment inference at 1024 x 2048, per network and runtime.

    python benchmarks/segment_memory.py                     # 1024 x 2048, every network below
    python benchmarks/segment_memory.py --size 512 1024 --threads 2

Every measurement runs in its own child process (``python benchmarks/segment_memory.py
--child ...``) that builds the model, runs one batch-1 forward pass on a seeded random
``1 x 3 x H x W`` image and prints its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``,
this machine); the same child on a 64 x 128 image gives the fixed cost (Python, torch or
ONNX Runtime, the weights). Measured:

* PyTorch eager fp32, no grad, for the UNet widths of the quick and full profiles (8, 32)
  and HRNetV2 tiny, W18-small and W48 (random weights: memory does not depend on them);
* ONNX Runtime on every compiled segment artifact present
  (``artifacts/segment/compile/<net>/<variant>/cpu/model.onnx``, the DVC outputs).

The issue's goal: every stage <= 4 GB at 1024 x 2048. Nothing here is estimated.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 9  # segment.data.classes of params.yaml
TORCH_NETS = {"unet-w8": ("unet", 8), "unet-w32": ("unet", 32), "hrnet-tiny": ("hrnet", "tiny"),
              "hrnet-w18s": ("hrnet", "w18s"), "hrnet-w48": ("hrnet", "w48")}
GOAL_MB = 4096


def _child(kind: str, what: str, height: int, width: int, threads: int) -> None:
    """Run one forward pass and print ``<peak RSS kB> <seconds>``."""
    import numpy as np

    x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    if kind == "torch":
        import torch

        from greenpipe.recipes.segment.models import HRNetV2, SegUNet, SegUNetConfig, hrnet_config

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        arch, size = TORCH_NETS[what]
        model = (SegUNet(SegUNetConfig(NUM_CLASSES, int(size), 4)) if arch == "unet"
                 else HRNetV2(hrnet_config(str(size), NUM_CLASSES))).eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            model(torch.from_numpy(x))
    else:
        from greenpipe.runtime.ort import OrtRunner

        runner = OrtRunner(Path(what), threads, 1)
        t0 = time.perf_counter()
        runner.run(x)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0)


def measure(kind: str, what: str, height: int, width: int, threads: int) -> tuple[float, float]:
    """(peak RSS MB, forward-pass s) of one child process."""
    cmd = [sys.executable, __file__, "--child", kind, what, str(height), str(width), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{kind} {what} at {height}x{width} failed:\n{out.stderr[-2000:]}")
    kb, seconds = out.stdout.split()[-2:]
    return int(kb) / 1024, float(seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=4, metavar=("KIND", "WHAT", "H", "W"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, what, h, w = args.child
        _child(kind, what, int(h), int(w), args.threads)
        return 0

    from greenpipe.runtime.base import describe_host

    h, w = args.size
    runs = [("torch", name, f"PyTorch eager fp32, {name}") for name in TORCH_NETS]
    for path in sorted((ROOT / "artifacts" / "segment" / "compile").glob("*/*/cpu/model.onnx")):
        net, variant = path.parts[-4], path.parts[-3]
        runs.append(("ort", str(path), f"ONNX Runtime, {net} {variant} ({path.relative_to(ROOT)})"))
    print(f"peak RSS of one batch-1 inference at {h} x {w} (ru_maxrss of a child process that runs only it; "
          f"{describe_host(args.threads)}); fixed cost = the same child at 64 x 128:")
    print(f"  {'what':78s} {'peak MB':>8s} {'fixed MB':>9s} {'forward s':>10s}")
    worst = 0.0
    for kind, what, label in runs:
        fixed, _ = measure(kind, what, 64, 128, args.threads)
        peak, seconds = measure(kind, what, h, w, args.threads)
        worst = max(worst, peak)
        print(f"  {label:78s} {peak:8.0f} {fixed:9.0f} {seconds:10.2f}")
    verdict = "met" if worst <= GOAL_MB else "NOT met"
    print(f"goal: peak <= {GOAL_MB} MB at {h} x {w}: {verdict} (largest {worst:.0f} MB, measured above)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
