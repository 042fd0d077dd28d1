"""Print where an online TSM frame's time goes on this CPU: pre-process, each kernel, each shift.

    .venv/bin/python -m benchmarks.video_fps [--variant tflite_int8] [--frames 500] [--threads 2]

Reads what ``dvc repro video_eval`` needs (artifacts/video/quant/<variant>,
artifacts/video/data) and streams val frames through the host loop
(greenpipe/video/host.py) on TFLite.  FPS = 1 / (pre-process + inference) per
frame, as TSM's online demo reports it; sustained = frames / wall-clock.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="tflite_int8")
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quant", type=Path, default=Path("artifacts/video/quant"))
    ap.add_argument("--data", type=Path, default=Path("artifacts/video/data"))
    args = ap.parse_args()

    from greenpipe.data.video import load_split
    from greenpipe.quant.kernels import read_kernels_manifest
    from greenpipe.video.env import configure_tensorflow, dataset_root
    from greenpipe.runtime import load
    from greenpipe.video.host import ClipRunner, timed_run

    configure_tensorflow(args.threads)
    manifest = read_kernels_manifest(args.quant / args.variant)
    from greenpipe.params import load_params

    size, t = manifest["kernels"][0]["inputs"][0]["shape"][1], load_params().video.model.n_frames
    clips = load_split(dataset_root(args.data), "val", t, size)[0]
    runner = ClipRunner.load(args.quant / args.variant, args.threads, load)
    pipe, described = runner.pipe, runner.first
    r = timed_run(pipe, clips, args.frames, warmup=30)
    print(f"{args.variant}: {len(pipe.kernels)} kernels, {size}x{size}, {described['label']}, {described['host']}")
    print(f"  pre-process {r['preprocess_ms']:.3f} ms")
    for k, ms in enumerate(r["kernel_ms"]):
        shift = f"   shift before it {r['shift_ms'][k - 1]:.3f} ms" if k else ""
        print(f"  kernel k{k:02d} {ms:.3f} ms{shift}")
    print(f"  kernels {r['kernel_total_ms']:.3f} ms, shifts {r['shift_total_ms']:.3f} ms")
    print(f"  FPS (1 / (pre + inference)) {r['fps']:.1f}; sustained {r['sustained_fps']:.1f} frames/s")


if __name__ == "__main__":
    main()
