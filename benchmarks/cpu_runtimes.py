"""Which CPU runtime runs the compiled UNet artifacts fastest, and does each one agree with the variant?

    python benchmarks/cpu_runtimes.py                         # DVC outputs if present, else a standalone model
    python benchmarks/cpu_runtimes.py --batch 8 --runs 7 --json cpu_runtimes.json

For the fp32 and the ptq8 (int8 QDQ) ONNX artifacts of the ``onnx`` compile
target (artifacts/compile/{fp32,ptq8}/cpu/model.onnx after a pipeline run),
at batch 1 and at a batch of ``--batch`` (the Offline batch), one seeded
``Nx3xSxS`` input each, it times every registered CPU runtime that reads the
ONNX artifact:

* ``ort``: ONNX Runtime, CPU EP, graph optimization level ORT_ENABLE_ALL (what
  fuses ``DQ -> Conv -> Q`` into QLinearConv), sequential, ``--threads``
  intra-op threads, one inter-op thread: how greenpipe deploys;
* ``openvino``: OpenVINO's CPU plugin, ``--threads`` inference threads, one
  stream, latency hint, f32 inference precision;
* ``openvino_bf16``: the same at bf16 inference precision, on the ``bf16``
  variant's artifact only (artifacts/compile/bf16/cpu/model.onnx, timed when
  it exists).

Each contender's latency is the median over ``--runs`` (at least 5) timed
calls, with their min - max, taken in alternating blocks (see
benchmarks/int8_speedup.py).  Before timing, each runtime's output is compared
with ONNX Runtime's on the same input: ORT is the runtime the compile stage's
agreement check ran against the variant's fake-quant model.  A runtime whose
max |diff| exceeds ``compile.targets.cpu.agreement_tolerance`` (params.yaml)
is printed as excluded: it does not compute the variant.  When the DVC
outputs are missing, the standalone random-weight UNet of
benchmarks/int8_speedup.py is built instead, and the output says so.

PT2E with the x86 inductor quantizer is not a contender: ``torch.compile`` of
even the tests' tiny PT2E-quantized UNet takes minutes on a small shared CPU,
and its uint8 asymmetric numerics are the ``inc`` variant's, not ptq8's, so it
could not agree with the ptq8 artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.int8_speedup import standalone_artifacts, times_ms  # noqa: E402
from greenpipe.bench.macs import onnx_macs  # noqa: E402
from greenpipe.params import TargetParams, load_params  # noqa: E402
from greenpipe.runtime import load  # noqa: E402
from greenpipe.runtime.base import describe_host  # noqa: E402

RUNTIMES = ("ort", "openvino")  # the registered CPU runtimes that read the compiled ONNX artifact
BF16_RUNTIMES = ("openvino_bf16",)  # also timed on the bf16 variant's artifact, which they compute natively
REFERENCE = "ort"  # the runtime the compile stage's agreement check ran


def tolerance(params_path: Path) -> tuple[float, str]:
    """``compile.targets.cpu.agreement_tolerance`` and where it came from."""
    if params_path.exists():
        targets = load_params(params_path, light=True).compile.targets
        if "cpu" in targets:
            return targets["cpu"].agreement_tolerance, f"{params_path} compile.targets.cpu.agreement_tolerance"
    return TargetParams().agreement_tolerance, "the default compile.targets.<t>.agreement_tolerance"


def measure(
    artifacts: dict[str, Path], batches: list[int], size: int, threads: int, runs: int, warmup: int, tol: float
) -> list[dict]:
    """One row per (variant, batch, runtime): agreement with ORT and latency (median, min, max, ms)."""
    rows = []
    for variant, path in artifacts.items():
        for batch in batches:
            x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
            names = RUNTIMES + (BF16_RUNTIMES if variant == "bf16" else ())
            runners = {name: load(name, path, threads, batch) for name in names}
            reference = runners[REFERENCE].run(x)
            macs = onnx_macs(path, x.shape)
            times = times_ms({name: (lambda r=r: r.run(x)) for name, r in runners.items()}, runs, warmup)
            for name, runner in runners.items():
                diff = float(np.abs(runner.run(x) - reference).max())
                t = times[name]
                median = statistics.median(t)
                rows.append({
                    "variant": variant, "artifact": str(path), "batch": batch, "input": list(x.shape),
                    "runtime": name, "label": runner.describe()["label"], "threads": threads,
                    "median_ms": median, "min_ms": min(t), "max_ms": max(t), "runs": len(t),
                    "fps": batch * 1e3 / median, "conv_macs": macs,
                    "max_abs_diff_vs_ort": diff, "tolerance": tol, "agrees": diff <= tol,
                })
    return rows


def fastest(rows: list[dict]) -> dict[str, dict]:
    """``"<variant> batch <N>" -> row`` of the fastest runtime that agrees, for each variant and batch."""
    best: dict[str, dict] = {}
    for r in rows:
        key = f"{r['variant']} batch {r['batch']}"
        if r["agrees"] and (key not in best or r["median_ms"] < best[key]["median_ms"]):
            best[key] = r
    return best


def print_table(rows: list[dict]) -> None:
    print(f"{'variant':8} {'batch':>5} {'runtime':13} {'median ms':>10} {'min - max ms':>17} {'img/s':>8} "
          f"{'max|diff| vs ORT':>17}  verdict")
    for r in rows:
        verdict = "agrees" if r["agrees"] else f"EXCLUDED (> tolerance {r['tolerance']:g})"
        if r["runtime"] == REFERENCE:
            verdict = "reference"
        print(f"{r['variant']:8} {r['batch']:>5} {r['runtime']:13} {r['median_ms']:10.2f} "
              f"{r['min_ms']:8.2f} - {r['max_ms']:6.2f} {r['fps']:8.2f} {r['max_abs_diff_vs_ort']:17.6g}  {verdict}")
    print()
    for key, best in fastest(rows).items():
        print(f"fastest agreeing runtime, {key}: {best['runtime']} ({best['median_ms']:.2f} ms)")
    print("(a device runs the one chosen in params.yaml: deploy.devices.<device>.runtime)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32-onnx", type=Path, default=Path("artifacts/compile/fp32/cpu/model.onnx"))
    ap.add_argument("--int8-onnx", type=Path, default=Path("artifacts/compile/ptq8/cpu/model.onnx"))
    ap.add_argument("--bf16-onnx", type=Path, default=Path("artifacts/compile/bf16/cpu/model.onnx"),
                    help="timed too when it exists (variant bf16 compiled for cpu)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="where the agreement tolerance is read")
    ap.add_argument("--size", type=int, default=256, help="input height = width (px)")
    ap.add_argument("--batch", type=int, default=8, help="the Offline batch, timed besides batch 1")
    ap.add_argument("--threads", type=int, default=2, help="threads for every runtime")
    ap.add_argument("--runs", type=int, default=6, help="timed calls per contender (at least 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls at the start of each block")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs must be at least 5: a median of fewer calls says little about a shared CPU")

    tol, tol_source = tolerance(args.params)
    with tempfile.TemporaryDirectory() as tmp:
        if args.fp32_onnx.exists() and args.int8_onnx.exists():
            artifacts = {"fp32": args.fp32_onnx, "ptq8": args.int8_onnx}
            what = f"the DVC compile outputs {args.fp32_onnx}, {args.int8_onnx}"
            if args.bf16_onnx.exists():
                artifacts["bf16"] = args.bf16_onnx
                what += f", {args.bf16_onnx}"
        else:
            print("DVC outputs not found: building a standalone random-weight model (takes ~20 s)", file=sys.stderr)
            _, fp32_path, int8_path, what = standalone_artifacts(Path(tmp))
            artifacts = {"fp32": fp32_path, "ptq8": int8_path}
            what = f"NOT a deployed model: {what}"
        load_before = os.getloadavg()[0]
        rows = measure(artifacts, sorted({1, args.batch}), args.size, args.threads, args.runs, args.warmup, tol)
        load_after = os.getloadavg()[0]

    print(f"models: {what}")
    print(f"input: Nx3x{args.size}x{args.size} float32 (seeded uniform), N = 1 and {args.batch}")
    print(f"measured on {describe_host(args.threads)}; per contender the median of {rows[0]['runs']} timed calls "
          f"(min - max) in 3 alternating blocks, {args.warmup} warm-up(s) each")
    print(f"1-min load average before / after: {load_before:.2f} / {load_after:.2f} (others skew timings)")
    print(f"agreement: max |output - ONNX Runtime's| on the timed input, tolerance {tol:g} ({tol_source})")
    print("ort: ONNX Runtime, CPU EP, ORT_ENABLE_ALL, sequential, 1 inter-op thread; "
          "openvino: CPU plugin, 1 stream, LATENCY hint, f32 precision (openvino_bf16: bf16 precision)")
    for label in dict.fromkeys(r["label"] for r in rows):
        print(f"  {label}")
    print()
    print_table(rows)
    if args.json:
        choice = {key: r["runtime"] for key, r in fastest(rows).items()}
        args.json.write_text(json.dumps(
            {"models": what, "host": describe_host(args.threads), "fastest": choice, "rows": rows}, indent=1))
        print(f"\nrows written to {args.json}")


if __name__ == "__main__":
    main()
