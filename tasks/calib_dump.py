"""Stage ``calib_dump``: dump the float model's tensors at every pipeline boundary.

    python -m tasks.calib_dump --data data/prepared --model models/denoise \
        --out artifacts/calib --metrics metrics/calib_dump.json

The recipe declares its boundaries (UNet: its input; TSM: the input of every
kernel between shifts) and how calibration inputs are drawn from the train
split.  Forward pre-hooks capture what each boundary sees while the float
model runs, so the dump is exactly what a per-kernel quantizer is fed.  The
on-disk format is documented in greenpipe/calib.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from greenpipe.calib import BoundaryWriter, write_index
from greenpipe.io import replacing_dir
from greenpipe.params import Params
from greenpipe.recipes import get_recipe
from greenpipe.recipes.base import model_from_checkpoint
from tasks._cli import run_stage


def calib_dump(params: Params, data: Path, model_dir: Path, out: Path) -> dict:
    """Write one directory per boundary under ``out``; return per-boundary manifests."""
    t0 = time.perf_counter()
    torch.set_num_threads(params.base.threads)
    model, ckpt = model_from_checkpoint(model_dir / "checkpoint.pt")
    recipe = get_recipe(ckpt["recipe"])
    bounds = recipe.boundaries(model)
    captured: dict[str, np.ndarray] = {}
    handles = []
    for name, module in bounds.items():
        if module is not None:
            hook = lambda _m, inputs, name=name: captured.__setitem__(name, inputs[0].detach().numpy().copy())  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook))
    rng = np.random.default_rng(params.base.seed)
    cp = params.calib_dump
    try:
        with replacing_dir(out) as tmp, torch.no_grad():
            writers = {name: BoundaryWriter(tmp, name) for name in bounds}
            for source, x in recipe.calibration_inputs(data, cp.samples, cp.crop, rng):
                captured.clear()
                for name, module in bounds.items():
                    if module is None:
                        captured[name] = x
                model(torch.from_numpy(x))
                for name, writer in writers.items():
                    writer.add(captured[name], source)
            manifests = {name: w.close() for name, w in writers.items()}
            write_index(tmp, list(bounds))
    finally:
        for h in handles:
            h.remove()
    return {
        "boundaries": len(manifests),
        "samples": cp.samples,
        "per_boundary": {
            n: {k: m[k] for k in ("shape", "dtype", "count", "min", "max", "mean", "std")} for n, m in manifests.items()
        },
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
    run_stage(lambda params: calib_dump(params, args.data, args.model, args.out), args.params, args.metrics)


if __name__ == "__main__":
    main()
