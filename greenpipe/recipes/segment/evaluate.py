"""The segment recipe's eval stage: score and time every compiled artifact of one network.

For each variant in ``segment.quantize`` the compiled ONNX model
(``<compiled>/<variant>/cpu/model.onnx``) runs on ONNX Runtime on this CPU
(``base.threads`` threads): mIoU, pixel accuracy and per-class IoU on the val
split, then the median latency of ``segment.eval.latency_runs`` batch-1 runs
(after one warm-up) at each of ``segment.eval.latency_sizes``; params and
MACs come from the float model of the checkpoint.  One JSON per variant,
``<out>/<variant>.json``; the stage's metrics hold them all.  With a ``figures``
path: ``per_class_iou.png`` (bars per class and variant) and, per variant,
``overlay_<net>-<variant>-<image>.png`` for the first val images (image,
ground truth, prediction; greenpipe/recipes/segment/figures.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from greenpipe.errors import GreenpipeError
from greenpipe.io import write_json
from greenpipe.params import Params
from greenpipe.recipes.segment.data import split_samples
from greenpipe.recipes.segment.figures import PALETTE, iou_bars, overlay

OVERLAYS = 3  # val images shown per variant


def latency_ms(run, shape: tuple[int, ...], runs: int) -> float:
    """Median wall time (ms) of ``runs`` calls of ``run`` on a fixed random input of ``shape``, after one warm-up."""
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _overlays(data: Path, outputs: dict[str, np.ndarray], out: Path, tag: str, count: int) -> None:
    """``count`` val images as image / ground truth / prediction over the image (PNG, the class palette)."""
    from greenpipe.io import write_image

    for sample in split_samples(data, "val")[:count]:
        image, truth = sample.load()
        write_image(out / f"overlay_{tag}_{sample.name}.png", overlay(image, truth, outputs[sample.name].argmax(0),
                                                                      PALETTE))


def eval_stage(recipe: Any, params: Params, paths: dict[str, Path]) -> dict:
    """Write ``paths["out"]/<variant>.json`` per variant of ``paths["model"]``'s network; ``recipe``: segment's."""
    import torch

    from greenpipe.recipes.base import check_quality, model_from_checkpoint
    from greenpipe.recipes.segment.models import macs
    from greenpipe.runtime.ort import load  # not greenpipe.runtime: its registry imports the recipes
    from greenpipe.runtime.base import describe_host

    sp = params.recipe_section("segment")
    model, ckpt = model_from_checkpoint(Path(paths["model"]) / "checkpoint.pt")
    net = Path(paths["model"]).name
    torch.set_num_threads(params.base.threads)
    facts = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6,
             "gmacs": {f"{h}x{w}": macs(model, (1, 3, h, w)) / 1e9 for h, w in sp.eval.latency_sizes},
             "model_args": ckpt["model_args"]}
    host = describe_host(params.base.threads)
    results, per_class = {}, {}
    for variant in sp.quantize:
        artifact = Path(paths["compiled"]) / variant / "cpu" / "model.onnx"
        if not artifact.exists():
            raise GreenpipeError(f"{artifact}: no compiled artifact of {net} {variant}; run its segment_compile stage")
        runner = load(artifact, params.base.threads, 1)
        outputs: dict[str, np.ndarray] = {}
        evaluation = recipe.evaluate(runner.run, Path(paths["data"]), multiple=recipe.multiple(ckpt["model_args"]),
                                     outputs=outputs)
        check_quality(evaluation.quality, recipe, f"segment eval {net} {variant}")
        latency = {f"{h}x{w}": latency_ms(runner.run, (1, 3, h, w), sp.eval.latency_runs)
                   for h, w in sp.eval.latency_sizes}
        row = {"model": net, "variant": variant, "recipe": "segment", **evaluation.summary(),
               "per_class_iou": evaluation.extra["per_class_iou"], "latency_ms": latency,
               "latency_runs": sp.eval.latency_runs, **facts,
               "source": f"measured on {host}: ONNX Runtime, compiled artifact {artifact}, batch 1, "
                         f"median of {sp.eval.latency_runs} runs; MACs counted on the float model (convolutions)"}
        write_json(Path(paths["out"]) / f"{variant}.json", row)
        results[variant] = {k: row[k] for k in ("miou", "pixel_acc", "latency_ms")}
        per_class[variant] = row["per_class_iou"]
        if "figures" in paths:
            _overlays(Path(paths["data"]), outputs, Path(paths["figures"]), f"{net}-{variant}", OVERLAYS)
    if "figures" in paths:
        iou_bars(per_class, f"{net}: per-class IoU on val, compiled artifacts on ONNX Runtime ({host})",
                 Path(paths["figures"]) / "per_class_iou.png")
    return {"model": net, "variants": results, "params_m": facts["params_m"], "gmacs": facts["gmacs"]}
