"""Stage ``calib_dump`` (and ``video_calib``): dump the float model's tensors at every pipeline boundary.

    python -m tasks.calib_dump --recipe denoise --data artifacts/prepared --model models/denoise \
        --out artifacts/calib --metrics metrics/calib_dump.json

The recipe says what its boundaries are and feeds them (``Recipe.calibration_samples``:
the UNet's input, captured by forward pre-hooks; every TSM kernel's input, recorded
by the host loop over calibration clips), drawing its samples from its own params
section (``calib_dump``, ``video.calib``) and ``base.seed``.  The dump is written in
greenpipe/calib.py's format, the same for every recipe.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from greenpipe.calib import dump_calibration
from greenpipe.params import Params
from greenpipe.recipes import get_recipe
from tasks._cli import run_stage


def calib_dump(params: Params, recipe: str, data: Path, model_dir: Path, out: Path) -> dict:
    """Write one directory per boundary of ``recipe`` under ``out``; return per-boundary statistics."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(params.base.seed)
    calibration = get_recipe(recipe).calibration_samples(model_dir, data, params, rng)
    manifests = dump_calibration(calibration, out)
    return {
        "boundaries": len(manifests),
        **calibration.facts,
        "per_boundary": {n: {k: m[k] for k in calibration.stats} for n, m in manifests.items()},
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True, help="a registered recipe (greenpipe.recipes)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: calib_dump(params, args.recipe, args.data, args.model, args.out), args.params,
              args.metrics)


if __name__ == "__main__":
    main()
