"""Is TFLite int8 faster than float for the video recipe's TSM kernels once they do real work?

    python benchmarks/video_int8.py                      # 224 px frames, 2 threads
    python benchmarks/video_int8.py --size 32            # the deployed (training) frame size
    python benchmarks/video_int8.py --size 224 --threads 2 --runs 200 --rounds 5

Builds the TSM MobileNetV2 of params.yaml's ``video.model`` at ``--size`` px with its initial
(seeded) weights, splits it at every shift and converts each kernel to float and full-int8 TFLite
with the video quantize stage's own handlers (greenpipe/quant/tflite_kernels.py), int8 calibrated
on a dump of seeded random frames run through the float host loop.  Then, in one process, batch 1,
``--threads`` threads, float and int8 taking turns in ``--rounds`` blocks that each start with
``--warmup`` untimed calls (benchmarks/int8_speedup.py), it times (a) each kernel's ``invoke()``
alone, its inputs preset by a host-loop frame, and (b) one frame of the online host loop
(greenpipe/video/host.py: pre-process, 11 kernels, 10 CPU shifts, int8 rescales).  Every figure
is the median over the blocks of a block's median ms (or of its sum over kernels, or of its
float / int8 ratio), with [lo-hi] the lowest and highest block: load that comes and goes shows as
a wide range instead of hiding in one number.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.int8_speedup import times_ms  # noqa: E402
from greenpipe.runtime.base import describe_host  # noqa: E402

GOAL = 2.0  # the goal: TSM int8 kernels on the CPU path at least 2x as fast as the float ones
VARIANTS = ("float", "int8")


def build_pipelines(size: int, threads: int, calib_clips: int, work: Path,
                    params: Path) -> tuple[dict, np.ndarray, str]:
    """The float and int8 host loops (HostPipeline) at ``size`` px, the calibration clips, what was built."""
    from greenpipe.calib import dump_calibration
    from greenpipe.params import load_params
    from greenpipe.video.env import configure_tensorflow

    configure_tensorflow(threads)  # TensorFlow only builds and calibrates here; TFLite is what is timed
    import keras

    from greenpipe.models.tsm_tf import TSMConfig, make_net, split_models
    from greenpipe.quant.tflite_kernels import (TfliteFp32Config, TfliteInt8Config, quantize_fp32,
                                                quantize_int8)
    from greenpipe.runtime import load
    from greenpipe.video.calib import calibration
    from greenpipe.video.host import ClipRunner

    m = load_params(params, light=True).video.model
    keras.utils.set_random_seed(0)
    net = make_net(TSMConfig(arch=m.arch, input_size=size, n_frames=m.n_frames, fold_div=m.fold_div,
                             width_mult=m.width_mult, last_channel=m.last_channel))
    kernels, manifest = split_models(net)
    frames = np.random.default_rng(1).integers(0, 256, (calib_clips, m.n_frames, size, size, 3), np.uint8)
    dump_calibration(calibration(net, frames, [f"random{i}" for i in range(calib_clips)]), work / "calib")
    quantize_fp32(kernels, manifest, work / "calib", work / "float", TfliteFp32Config())
    quantize_int8(kernels, manifest, work / "calib", work / "int8", TfliteInt8Config())
    pipes = {v: ClipRunner.load(work / v, threads, load).pipe for v in VARIANTS}
    what = (f"TSM {m.arch} (params.yaml video.model: width {m.width_mult}, head {m.last_channel}, fold "
            f"1/{m.fold_div}) at {size}x{size} px, {len(kernels)} kernels; initial weights (keras seed 0), "
            "not a trained checkpoint: conv arithmetic does not depend on weight values; int8 calibrated "
            f"on {calib_clips} clips x {m.n_frames} seeded random uint8 frames")
    return pipes, frames, what


def runner(kernel):
    return getattr(kernel, "kernel", kernel)  # the TfliteRunner; a BoundKernel wraps it


def xnnpack(kernel) -> str:
    """'whole' when one XNNPACK DELEGATE node maps the graph's inputs to its outputs, else 'part' / 'none'."""
    it = runner(kernel).interpreter
    nodes = [o for o in it._get_ops_details() if o["op_name"] == "DELEGATE"]  # private, but the only view
    ins = {d["index"] for d in it.get_input_details()}
    outs = {d["index"] for d in it.get_output_details()}
    if len(nodes) == 1 and ins <= set(nodes[0]["inputs"]) and outs == set(nodes[0]["outputs"]):
        return "whole"
    return "part" if nodes else "none"


def frame_step(pipe, frames: np.ndarray):
    """One online frame per call, streamed as timed_run does: (N, T, S, S, 3) uint8, reset per clip."""
    stream, per_clip, count = frames.reshape(-1, *frames.shape[2:]), frames.shape[1], itertools.count()

    def step():
        i = next(count)
        if i % per_clip == 0:
            pipe.reset()
        pipe.step(stream[i % len(stream)][None].astype(np.float32) / 255.0)  # (1, S, S, 3) in [0, 1]
    return step


def blocks(times: dict[str, list[float]], rounds: int) -> dict[str, list[float]]:
    """Each contender's median ms per block (times_ms keeps its calls in block order)."""
    out = {}
    for name, t in times.items():
        n = len(t) // rounds
        out[name] = [statistics.median(t[b * n:(b + 1) * n]) for b in range(rounds)]
    return out


def compare(f: list[float], i: list[float]) -> dict:
    """float vs int8 from per-block ms: the median block and [lo, hi] of each and of float / int8."""
    ratios = [a / b for a, b in zip(f, i)]
    return {"float_ms": statistics.median(f), "int8_ms": statistics.median(i),
            "ratio": statistics.median(ratios), "float_range": (min(f), max(f)),
            "int8_range": (min(i), max(i)), "ratio_range": (min(ratios), max(ratios))}


def bench(size: int, threads: int, runs: int, warmup: int, rounds: int, calib_clips: int,
          params: Path) -> dict:
    """Build both variants at ``size`` px; time (a) each kernel's invoke and (b) the host loop per frame."""
    with tempfile.TemporaryDirectory(prefix="video-int8-") as tmp:
        pipes, frames, what = build_pipelines(size, threads, calib_clips, Path(tmp), params)
        steps = {v: frame_step(p, frames) for v, p in pipes.items()}
        for step in steps.values():
            step()  # every interpreter now holds a real frame's inputs: (a) invokes on them
        names = [k["name"] for k in pipes["float"].manifest["kernels"]]
        invokes = {f"{n} {v}": runner(pipes[v].kernels[k]).interpreter.invoke
                   for k, n in enumerate(names) for v in VARIANTS}
        load = [os.getloadavg()[0]]
        per_kernel = blocks(times_ms(invokes, runs, warmup, rounds), rounds)
        for p in pipes.values():
            p.reset_timing()
        loop = blocks(times_ms(steps, runs, warmup, rounds), rounds)
        load.append(os.getloadavg()[0])
        kernels = {n: compare(per_kernel[f"{n} float"], per_kernel[f"{n} int8"])
                   | {"xnnpack": {v: xnnpack(pipes[v].kernels[k]) for v in VARIANTS},
                      "shape": "x".join(map(str, pipes["float"].kernels[k].inputs[0].shape[1:]))}
                   for k, n in enumerate(names)}
        sums = {v: [sum(b) for b in zip(*(per_kernel[f"{n} {v}"] for n in names))] for v in VARIANTS}
        parts = {v: p.timing.per_step_ms() | {"rescaled": len(p.rescaled)} for v, p in pipes.items()}
        library = runner(pipes["float"].kernels[0]).library
    import tensorflow as tf

    return {"what": what, "size": size, "threads": threads, "runs": runs, "warmup": warmup,
            "rounds": rounds, "runtime": library, "converter": f"TensorFlow {tf.__version__} TFLiteConverter",
            "host": describe_host(threads), "load": load, "kernels": kernels,
            "kernel_sum": compare(sums["float"], sums["int8"]), "loop": compare(loop["float"], loop["int8"]),
            "loop_parts": parts}


def report(r: dict) -> None:
    def span(lo_hi, fmt=".3f"):
        return f"[{lo_hi[0]:{fmt}}-{lo_hi[1]:{fmt}}]"

    def row(name, shape, k, xnn=""):
        return (f"  {name:6} {shape:13} {k['float_ms']:7.3f} {span(k['float_range']):>15} "
                f"{k['int8_ms']:7.3f} {span(k['int8_range']):>15} {k['ratio']:6.2f}x "
                f"{span(k['ratio_range'], '.2f'):>11}  {xnn}")

    def verdict(k):
        return (f"{k['ratio']:5.2f}x faster {span(k['ratio_range'], '.2f')}  goal >= {GOAL:.0f}x: "
                f"{'met' if k['ratio'] >= GOAL else 'not met'}")

    n = len(r["kernels"])
    print(f"model: {r['what']}")
    print(f"runtime: {r['runtime']} interpreter (kernels converted by {r['converter']}); "
          f"measured on {r['host']}, batch 1")
    print(f"{r['runs']} timed calls per contender in {r['rounds']} alternating float / int8 blocks, "
          f"{r['warmup']} warm-up(s) each; figure = median over blocks of a block's median (its sum, its "
          "ratio), [lo-hi] = lowest-highest block")
    print(f"1-min load average before / after: {r['load'][0]:.2f} / {r['load'][1]:.2f} (others skew timings)")
    print(f"\n(a) each kernel's invoke() alone, inputs preset (ms)\n  {'kernel':6} {'input HxWxC':13} "
          f"{'float':>23} {'int8':>23} {'int8 vs float':>19}  XNNPACK float/int8")
    for name, k in r["kernels"].items():
        print(row(name, k["shape"], k, f"{k['xnnpack']['float']}/{k['xnnpack']['int8']}"))
    print(row("sum", "", r["kernel_sum"]))
    lp = r["loop"]
    print(f"\n(b) online host loop, one frame: pre-process + {n} kernels + {n - 1} CPU shifts (ms)")
    for v in VARIANTS:
        p = r["loop_parts"][v]
        print(f"  {v:5} {lp[f'{v}_ms']:8.3f} {span(lp[f'{v}_range'])}; mean parts: pre-process "
              f"{p['preprocess_ms']:.3f}, kernels {sum(p['kernel_ms']):.3f}, shifts {sum(p['shift_ms']):.3f} "
              f"({p['rescaled']} boundaries rescaled)")
    print(f"\nint8 vs float, kernels summed : {verdict(r['kernel_sum'])}")
    print(f"int8 vs float, host loop     : {verdict(lp)}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="frame side (px); 32 is the deployed size")
    ap.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    ap.add_argument("--runs", type=int, default=200, help="timed calls per contender (split over the blocks)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls at the start of each block")
    ap.add_argument("--rounds", type=int, default=5, help="alternating blocks per contender")
    ap.add_argument("--calib-clips", type=int, default=2, help="random clips (video.model.n_frames) for int8")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = ap.parse_args(argv)
    if args.size < 32 or args.runs < args.rounds:
        ap.error("--size must be >= 32 px (MobileNetV2 downsamples 32x) and --runs >= --rounds")
    result = bench(args.size, args.threads, args.runs, args.warmup, args.rounds, args.calib_clips,
                   args.params)
    report(result)
    return result


if __name__ == "__main__":
    main()
