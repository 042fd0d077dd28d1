"""Stage ``video_eval``: run the quantized TSM kernels with CPU shifts; top-1, FPS and where the time goes.

    python -m tasks.video_eval --data artifacts/video/data --quant artifacts/video/quant \
        --train-metrics metrics/video --metrics metrics/video/eval.json

The work is :func:`greenpipe.video.eval.video_eval`: every per-kernel variant
under ``video.quantize`` that this host can run goes through the host loop
(greenpipe/video/host.py) for top-1 on the val clips, FPS as TSM's online
demo reports it with the per-kernel and per-shift breakdown, and sustained
throughput; the others are listed under ``not_run``.  It also compares TSM
with the no-shift TSN baseline (the train stage's metrics).  Params read:
``base.threads``, ``video.quantize``, ``video.model``, ``video.eval``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.video.eval import video_eval
from tasks._cli import run_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--quant", type=Path, required=True)
    ap.add_argument("--train-metrics", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: video_eval(params, args.data, args.quant, args.train_metrics), args.params,
              args.metrics)


if __name__ == "__main__":
    main()
