"""The segment recipe's eval stage: score and time every compiled artifact of one network.

For each variant in ``segment.quantize`` the compiled ONNX model
(``<compiled>/<variant>/cpu/model.onnx``) runs on ONNX Runtime on this CPU
(``base.threads`` threads): mIoU, pixel accuracy and per-class IoU on the val
split; then, at each of ``segment.eval.latency_sizes``, mIoU and pixel accuracy
with the network seeing the val images at that size (resized, logits resized
back to the labels: :func:`at_scale`) and its latency there: the wall time of
the artifact alone (batch 1, no resizing) on each of those images after one
warm-up run at that size, median and min-max.  Params and MACs come from the
float model of the checkpoint.  One JSON per variant,
``<out>/<variant>.json``; the stage's metrics hold them all.  With a ``figures``
path: ``per_class_iou.png`` (bars per class and variant) and, per variant,
``overlay_<net>-<variant>-<image>.png`` for the first val images (image,
ground truth, prediction; greenpipe/recipes/segment/figures.py) and
``scales.md``, the reference's table (mIoU, pixel accuracy, ms / image per
variant at each size).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from greenpipe.errors import GreenpipeError
from greenpipe.io import atomic_write_bytes, write_json
from greenpipe.params import Params
from greenpipe.recipes.segment.data import split_samples
from greenpipe.recipes.segment.figures import PALETTE, iou_bars, overlay

OVERLAYS = 3  # val images shown per variant


def at_scale(run: Callable[[np.ndarray], np.ndarray], size: tuple[int, int],
             times_ms: list[float] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``run`` seeing its input resized to ``size`` = (H, W) (bilinear), its logits resized back (bilinear).

    The network sees the scene at the test scale; the score stays at the labels' own resolution. With
    ``times_ms``, the wall time of each ``run`` call (the artifact alone, not the resizing) is appended.
    """
    import torch
    from torch.nn.functional import interpolate

    def scaled(x: np.ndarray) -> np.ndarray:  # (1, 3, h, w) -> (1, K, h, w)
        big = np.ascontiguousarray(interpolate(torch.from_numpy(x), size=tuple(size), mode="bilinear",
                                               align_corners=False).numpy())
        t0 = time.perf_counter()
        out = run(big)  # (1, K, H, W)
        if times_ms is not None:
            times_ms.append((time.perf_counter() - t0) * 1e3)
        return interpolate(torch.from_numpy(out), size=x.shape[2:], mode="bilinear", align_corners=False).numpy()

    return scaled


def scales_rows(rows: list[dict[str, Any]], sources: list[str] | None = None) -> list[str]:
    """The reference's table: mIoU, pixel accuracy and ms / image per model, variant and scale (markdown);
    with ``sources`` (one cell per row, e.g. ``[e1]``), a source column."""
    tail, align = (" source |", "---|") if sources else ("", "")
    lines = ["| model | variant | scale (H x W) | mIoU | pixel acc. | ms / image (median, min-max) |" + tail,
             "|---|---|---|---:|---:|---:|" + align]
    for k, row in enumerate(rows):
        for size, score in row["scales"].items():
            lo, hi = row["latency_spread_ms"][size]
            cell = f" {sources[k]} |" if sources else ""
            lines.append(f"| {row['model']} | {row['variant']} | {size} | {score['miou']:.3f} "
                         f"| {score['pixel_acc']:.3f} | {row['latency_ms'][size]:.1f} ({lo:.1f}-{hi:.1f}) |" + cell)
    return lines


def scales_note(host: str) -> str:
    """How :func:`scales_rows`' figures were measured, and the files they come from."""
    return (f"Measured on {host}: each compiled artifact (ONNX Runtime, batch 1) on every val image resized "
            "to the scale (bilinear), its logits resized back to the labels' resolution and scored there; "
            "ms / image: wall time of the artifact alone on each of those images at that scale, median of "
            "them after one warm-up run (metrics/segment/<model>/<variant>.json, `latency_runs` images). "
            "Compare latencies within one "
            "segment_eval run: the same artifact's time moves between runs on a shared host.")


def scales_table(net: str, rows: list[dict[str, Any]], host: str) -> str:
    """The reference's table for one network, as ``reports/segment/<net>/scales.md``."""
    lines = [f"# {net}: mIoU, pixel accuracy and latency at each test scale", "", *scales_rows(rows), "",
             scales_note(host), ""]
    return "\n".join(lines)


def _overlays(data: Path, outputs: dict[str, np.ndarray], out: Path, tag: str, count: int) -> None:
    """``count`` val images as image / ground truth / prediction over the image (PNG, the class palette)."""
    from greenpipe.io import write_image

    for sample in split_samples(data, "val")[:count]:
        image, truth = sample.load()
        write_image(out / f"overlay_{tag}_{sample.name}.png", overlay(image, truth, outputs[sample.name].argmax(0),
                                                                      PALETTE))


def _emulated(artifact: Path) -> str:
    """What the source must add when the artifact's bf16 is emulated: ONNX Runtime's CPU provider runs the
    convolutions between its bf16 ``Cast`` pairs in fp32, whatever bf16 instructions the CPU has."""
    import onnx

    graph = onnx.load(artifact, load_external_data=False).graph
    bf16 = any(n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.BFLOAT16 for a in n.attribute)
               for n in graph.node)
    return ("; bf16 emulated: each conv's inputs and outputs rounded to bf16 (Cast), the conv itself in fp32 "
            "on ONNX Runtime's CPU provider" if bf16 else "")


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
    results, per_class, rows = {}, {}, []
    for variant in sp.quantize:
        artifact = Path(paths["compiled"]) / variant / "cpu" / "model.onnx"
        if not artifact.exists():
            raise GreenpipeError(f"{artifact}: no compiled artifact of {net} {variant}; run its segment_compile stage")
        runner = load(artifact, params.base.threads, 1)
        outputs: dict[str, np.ndarray] = {}
        evaluation = recipe.evaluate(runner.run, Path(paths["data"]), multiple=recipe.multiple(ckpt["model_args"]),
                                     outputs=outputs)
        check_quality(evaluation.quality, recipe, f"segment eval {net} {variant}")
        scaled, timed = {}, {}
        for h, w in sp.eval.latency_sizes:
            runner.run(np.zeros((1, 3, h, w), np.float32))  # warm-up: the first run at a new size allocates
            times: list[float] = []
            scaled[f"{h}x{w}"] = recipe.evaluate(at_scale(runner.run, (h, w), times), Path(paths["data"]),
                                                 multiple=recipe.multiple(ckpt["model_args"])).summary()
            timed[f"{h}x{w}"] = (float(np.median(times)), [min(times), max(times)])
        runs = len(times)
        row = {"model": net, "variant": variant, "recipe": "segment", **evaluation.summary(),
               "per_class_iou": evaluation.extra["per_class_iou"],
               "scales": {size: {k: score[k] for k in ("miou", "pixel_acc")} for size, score in scaled.items()},
               "latency_ms": {size: t[0] for size, t in timed.items()},
               "latency_spread_ms": {size: t[1] for size, t in timed.items()},
               "latency_runs": runs, "host": host, **facts,
               "source": f"measured on {host}: ONNX Runtime, compiled artifact {artifact}, batch 1; scales: val "
                         "images resized to each size, logits resized back to the labels; latency: wall time of "
                         f"the artifact alone on each of the {runs} val images at that size, median after one "
                         "warm-up run (min-max in latency_spread_ms); MACs counted on the float model "
                         "(convolutions)" + _emulated(artifact)}
        write_json(Path(paths["out"]) / f"{variant}.json", row)
        rows.append(row)
        results[variant] = {k: row[k] for k in ("miou", "pixel_acc", "latency_ms", "scales")}
        per_class[variant] = row["per_class_iou"]
        if "figures" in paths:
            _overlays(Path(paths["data"]), outputs, Path(paths["figures"]), f"{net}-{variant}", OVERLAYS)
    if "figures" in paths:
        atomic_write_bytes(Path(paths["figures"]) / "scales.md", scales_table(net, rows, host).encode())
        iou_bars(per_class, f"{net}: per-class IoU on val, compiled artifacts on ONNX Runtime ({host})",
                 Path(paths["figures"]) / "per_class_iou.png")
    return {"model": net, "variants": results, "params_m": facts["params_m"], "gmacs": facts["gmacs"]}
