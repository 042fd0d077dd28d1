"""Stage ``video_calib``: dump every TSM kernel's inputs over calibration clips (online, buffers carried).

    python -m tasks.video_calib --data artifacts/video/data --model models/video/tsm \
        --out artifacts/video/calib --metrics metrics/video/calib.json

The float network is split at every shift and run by the host loop frame by
frame over ``video.calib.clips`` train clips, shift buffers carried across
each clip's frames; what each kernel is fed is written in greenpipe/calib.py's
format, one directory per kernel input (``k00_input``, ``kKK_shift``,
``kKK_residual``), plus ``split.json`` (the kernels' I/O names and shapes).
The shared ``calib_dump`` stage hooks PyTorch modules; a Keras network split
into kernels is dumped here instead, in the same format.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from greenpipe.params import Params
from tasks._cli import run_stage


def video_calib(params: Params, data: Path, model_dir: Path, out: Path) -> dict:
    """Write the per-boundary dump under ``out``; return per-boundary statistics."""
    from greenpipe.models.tsm_tf import load_checkpoint
    from greenpipe.recipes import get_recipe
    from greenpipe.video.calib import dump
    from greenpipe.video.env import configure_tensorflow, dataset_root

    t0 = time.perf_counter()
    configure_tensorflow(params.base.threads)
    net, _ = load_checkpoint(model_dir / "checkpoint.npz")
    recipe = get_recipe("video")
    rng = np.random.default_rng(params.base.seed)
    drawn = list(recipe.calibration_inputs(dataset_root(data), params.video.calib.clips, net.config.input_size, rng))
    manifests = dump(net, np.stack([c for _, c in drawn]), [s for s, _ in drawn], out)
    return {
        "boundaries": len(manifests),
        "kernels": net.n_kernels,
        "clips": len(drawn),
        "samples_per_boundary": next(iter(manifests.values()))["count"],
        "per_boundary": {n: {k: m[k] for k in ("shape", "count", "min", "max", "mean", "std")}
                         for n, m in manifests.items()},
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: video_calib(params, args.data, args.model, args.out), args.params, args.metrics)


if __name__ == "__main__":
    main()
