"""Peak resident memory of `greenpipe denoise` on one large image, run in tiles.

    .venv/bin/python benchmarks/denoise_memory.py                       # 8000 x 8000 RGB, 8-bit, --tile 512
    .venv/bin/python benchmarks/denoise_memory.py --side 12000 --bits 16

Builds the fp32 artifact of the tests' untrained tiny UNet (width 4, depth 2;
tests/stage_fixtures.py) in a temporary folder, writes a noisy SIDE x SIDE PNG,
and runs ``python -m greenpipe.cli denoise`` on it in a child process; the peak
RSS printed is that child's ``ru_maxrss``.  The same command on a 64 x 64 image
gives the fixed cost (Python, torch, ONNX Runtime, OpenCV), and the image's
own size in memory is printed beside it: the command should need about the
fixed cost plus the decoded image in its sample type (twice while OpenCV
decodes it), one band of output rows and one float32 tile, and never a
float32 copy of the whole image nor a whole output.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROBE = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def artifact(root: Path) -> Path:
    """The fp32 compiled model of the tests' tiny UNet, built under ``root``."""
    from greenpipe.quant.stage import quantize_stage
    from tasks.compile import compile_stage
    from tests.stage_fixtures import make_workspace

    ws = make_workspace(root / "ws")
    quantize_stage(ws.params, "fp32", ws.model, ws.calib, ws.data, root / "quant")
    compile_stage(ws.params, "fp32", "cpu", root / "quant", ws.data, root / "compiled")
    return root / "compiled" / "model.onnx"


def noisy_png(path: Path, side: int, bits: int) -> int:
    """Write a noisy mid-gray SIDE x SIDE RGB PNG, strip by strip; return its size in memory (bytes)."""
    import cv2

    dtype = np.uint8 if bits == 8 else np.uint16
    top = np.iinfo(dtype).max
    img = np.empty((side, side, 3), dtype)
    rng = np.random.default_rng(0)
    for y in range(0, side, 1000):  # a float copy of one strip at a time
        strip = rng.normal(0.45, 0.1, (min(1000, side - y), side, 3)).astype(np.float32)
        img[y : y + len(strip)] = np.clip(strip * top, 0, top).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise SystemExit(f"{path}: could not write the test image")
    return img.nbytes


def peak_rss(in_dir: Path, out_dir: Path, model: Path, tile: int) -> tuple[int, float, float]:
    """(exit code, peak RSS in MB, wall s) of `greenpipe denoise IN OUT` in a child process."""
    command = [sys.executable, "-m", "greenpipe.cli", "denoise", str(in_dir), str(out_dir), "--model", str(model),
               "--tile", str(tile)]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, *command], capture_output=True, text=True, cwd=ROOT)
    rc, kb = out.stdout.split()
    return int(rc), int(kb) / 1024, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=8000, help="image side in px (default 8000)")
    ap.add_argument("--bits", type=int, choices=(8, 16), default=8, help="bits per sample (default 8)")
    ap.add_argument("--tile", type=int, default=512, help="--tile passed to greenpipe denoise (default 512)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="denoise-memory-") as tmp:
        root = Path(tmp)
        model = artifact(root)
        noisy_png(root / "small" / "small.png", 64, args.bits)
        nbytes = noisy_png(root / "large" / "large.png", args.side, args.bits)
        rc0, fixed, _ = peak_rss(root / "small", root / "small_out", model, args.tile)
        rc1, peak, wall = peak_rss(root / "large", root / "large_out", model, args.tile)
        if rc0 or rc1:
            print(f"greenpipe denoise failed (exit {rc0}, {rc1})", file=sys.stderr)
            return 1
    mb = nbytes / 2**20
    print(f"image: {args.side} x {args.side} RGB, {args.bits}-bit = {mb:.0f} MB in its sample type; "
          f"a float32 copy would be {nbytes * (32 // args.bits) / 2**20:.0f} MB")
    print(f"peak RSS of `greenpipe denoise --tile {args.tile}` (ru_maxrss of the child process, this machine, "
          f"fp32 artifact of the tests' tiny UNet):")
    print(f"  64 x 64 image (fixed cost):  {fixed:8.0f} MB")
    print(f"  {args.side} x {args.side} image:        {peak:8.0f} MB  ({peak - fixed:.0f} MB above the fixed cost "
          f"= {(peak - fixed) / mb:.2f} x the image; {wall:.0f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
