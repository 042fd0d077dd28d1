"""How much faster are the int8 ONNX artifacts (ptq8, inc) than the float model on this CPU?

    python benchmarks/int8_speedup.py                 # DVC outputs if present, else a standalone model
    python benchmarks/int8_speedup.py --size 256 --threads 2 --runs 30
    python benchmarks/int8_speedup.py --checkpoint models/segment/hrnet/checkpoint.pt \
        --fp32-onnx artifacts/segment/compile/hrnet/fp32/cpu/model.onnx \
        --int8-onnx artifacts/segment/compile/hrnet/ptq8/cpu/model.onnx \
        --inc-onnx artifacts/segment/compile/hrnet/inc/cpu/model.onnx --size 256 512

Measured in one run, on one seeded ``1x3xHxW`` input (``--size H [W]``), batch 1: the fp32
PyTorch eager model, the fp32 ONNX artifact in ONNX Runtime, the int8
(ptq8, DPU numerics) ONNX artifact and, when it was compiled, the int8 (inc,
Intel x86 numerics) one, all in ONNX Runtime; each is the median of ``--runs``
timed calls, taken in alternating blocks that each start with ``--warmup``
untimed calls.  Paths default to the DVC outputs (models/denoise/checkpoint.pt,
artifacts/compile/{fp32,ptq8,inc}/cpu/model.onnx);
when fp32 or ptq8 is missing, a width-16 depth-3 UNet with random weights is built,
quantized with ptq8 on random calibration data and compiled the same way, so
the script also runs on a fresh clone (inc, which tunes against the val split,
is then left out).  Every line says where its number came from.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from greenpipe.compile.onnx_cpu import build
from greenpipe.models.unet import UNet, UNetConfig
from greenpipe.quant import quantize_variant
from greenpipe.quant.export import EXPORT_OPSET, export_onnx
from greenpipe.recipes.base import model_from_checkpoint
from greenpipe.runtime.base import describe_host
from greenpipe.runtime.ort import OrtRunner

PTQ8 = {"act_calibration": "percentile", "percentile": 99.99, "bias_correction": True}


def median_ms(
    fns: dict[str, Callable[[], object]], runs: int, warmup: int, rounds: int = 3
) -> dict[str, float]:
    """Median wall time in ms of each ``fns[name]()`` over ``runs`` timed calls (see :func:`times_ms`)."""
    return {name: statistics.median(t) for name, t in times_ms(fns, runs, warmup, rounds).items()}


def times_ms(
    fns: dict[str, Callable[[], object]], runs: int, warmup: int, rounds: int = 3
) -> dict[str, list[float]]:
    """Wall time in ms of each timed call of each ``fns[name]()``: ``runs`` calls, rounded up to whole blocks.

    The contenders take turns in ``rounds`` blocks (A B C A B C ...), each
    block starting with ``warmup`` untimed calls, so a change in background
    load hits all of them alike, and ONNX Runtime's thread pool, which
    spin-waits briefly after a run, never steals time from a timed call of
    the next contender.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    per_round = max(-(-runs // rounds), 1)  # at least ``runs`` calls in all
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def standalone_artifacts(work: Path) -> tuple[torch.nn.Module, Path, Path, str]:
    """Random-weight width-16 depth-3 UNet, its fp32 ONNX and its ptq8 int8 ONNX (compiled)."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=3, width=16, depth=3)).eval()
    gen = torch.Generator().manual_seed(1)
    calib = [torch.rand(1, 3, 128, 128, generator=gen) for _ in range(8)]
    paths = []
    for variant in ("fp32", "ptq8"):
        result = quantize_variant(variant, {"fp32": {}, "ptq8": PTQ8}, model, calib)
        exported = export_onnx(result.model, calib[0], work / variant)
        compiled, _ = build(onnx.load(exported), EXPORT_OPSET)
        path = work / variant / "model.compiled.onnx"
        onnx.save(compiled, path)
        paths.append(path)
    what = "random-weight UNet (width 16, depth 3, seed 0), ptq8 calibrated on 8 random 1x3x128x128 inputs"
    return model, paths[0], paths[1], what


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("models/denoise/checkpoint.pt"))
    ap.add_argument("--fp32-onnx", type=Path, default=Path("artifacts/compile/fp32/cpu/model.onnx"))
    ap.add_argument("--int8-onnx", type=Path, default=Path("artifacts/compile/ptq8/cpu/model.onnx"))
    ap.add_argument("--inc-onnx", type=Path, default=Path("artifacts/compile/inc/cpu/model.onnx"))
    ap.add_argument("--size", type=int, nargs="+", default=[256], metavar="PX",
                    help="input height and width (px); one value for a square input")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ONNX Runtime")
    ap.add_argument("--runs", type=int, default=30, help="timed calls per contender (split over 3 blocks)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls at the start of each block")
    args = ap.parse_args(argv)
    if len(args.size) > 2:
        ap.error(f"--size takes a height and at most a width, got {len(args.size)} values")
    height, width = args.size[0], args.size[-1]

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if all(p.exists() for p in (args.checkpoint, args.fp32_onnx, args.int8_onnx)):
            model, _ = model_from_checkpoint(args.checkpoint)
            fp32_path, int8_path = args.fp32_onnx, args.int8_onnx
            what = f"{args.checkpoint} and the DVC compile outputs {fp32_path}, {int8_path}"
            inc_path = args.inc_onnx if args.inc_onnx.exists() else None
            if inc_path is not None:
                what += f", {inc_path}"
        else:
            print(
                "DVC outputs not found: building a standalone random-weight model (takes ~20 s)",
                file=sys.stderr,
            )
            model, fp32_path, int8_path, what = standalone_artifacts(Path(tmp))
            inc_path = None

        x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
        xt = torch.from_numpy(x)
        fp32_ort = OrtRunner(fp32_path, args.threads, 1)
        int8_ort = OrtRunner(int8_path, args.threads, 1)

        def eager():
            with torch.inference_mode():
                model(xt)

        contenders = {"eager": eager, "fp32": lambda: fp32_ort.run(x), "int8": lambda: int8_ort.run(x)}
        if inc_path is not None:
            inc_ort = OrtRunner(inc_path, args.threads, 1)
            contenders["inc"] = lambda: inc_ort.run(x)

        load_before = os.getloadavg()[0]
        ms = median_ms(contenders, args.runs, args.warmup)
        load_after = os.getloadavg()[0]
        eager_ms, fp32_ms, int8_ms = ms["eager"], ms["fp32"], ms["int8"]
        ort_version = fp32_ort.describe()["version"]

    host = describe_host(args.threads)
    print(f"models: {what}")
    print(f"input: 1x3x{height}x{width} float32 (seeded uniform), batch 1, same input for all")
    print(
        f"measured on {host}; median of {args.runs} runs in 3 alternating blocks, {args.warmup} warm-ups each"
    )
    print(f"1-min load average before / after: {load_before:.2f} / {load_after:.2f} (others skew timings)")
    print()
    print(f"  fp32 PyTorch {torch.__version__} eager, inference_mode : {eager_ms:8.2f} ms")
    print(f"  fp32 ONNX Runtime {ort_version}, CPU EP             : {fp32_ms:8.2f} ms")
    print(f"  int8 ONNX Runtime {ort_version}, ptq8 artifact      : {int8_ms:8.2f} ms")
    if "inc" in ms:
        print(f"  int8 ONNX Runtime {ort_version}, inc artifact       : {ms['inc']:8.2f} ms")
    print()
    print(f"  int8 ORT vs fp32 PyTorch eager : {eager_ms / int8_ms:5.2f}x faster")
    print(f"  int8 ORT vs fp32 ORT           : {fp32_ms / int8_ms:5.2f}x faster")
    if "inc" in ms:
        print(f"  inc ORT vs fp32 PyTorch eager  : {eager_ms / ms['inc']:5.2f}x faster")
        print(f"  inc ORT vs fp32 ORT            : {fp32_ms / ms['inc']:5.2f}x faster")
    print(f"  fp32 ORT vs fp32 PyTorch eager : {eager_ms / fp32_ms:5.2f}x faster")


if __name__ == "__main__":
    main()
