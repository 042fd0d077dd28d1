"""The detect recipe's eval stage: score and time every compiled artifact of one model.

For each variant in ``detect.quantize`` the compiled ONNX model
(``<compiled>/<variant>/cpu/model.onnx``) runs on ONNX Runtime on this CPU (``base.threads``
threads), followed by the shared CPU post-process (postprocess.detections: softmax, decode,
per-class NMS in numpy; every runtime hands it the same raw tensor): mAP@0.5, mAP@0.5:0.95 and
AP@0.5 per class on the val tiles (COCOeval), then batch-1 latency from the project's LoadGen
wrapper (greenpipe/bench/loadgen.py, SingleStream, ``detect.eval.latency_s`` s per run,
``detect.eval.repeats`` runs: the median p50 with its min-max). Latency covers the network only:
the post-process is timed apart, once per val tile (median, ``postprocess_ms``). Params and
MACs (every Conv2d, greenpipe.prune.lkam.macs_and_params) come from the float model of the
checkpoint, pruned or not. One JSON per variant, ``<out>/<variant>.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from greenpipe.errors import GreenpipeError
from greenpipe.io import write_json
from greenpipe.params import Params


def eval_stage(recipe: Any, params: Params, paths: dict[str, Path]) -> dict:
    """Write ``paths["out"]/<variant>.json`` per variant of ``paths["model"]``; ``recipe``: detect's."""
    import torch

    from greenpipe.bench.loadgen import benchmark
    from greenpipe.prune.lkam import macs_and_params
    from greenpipe.recipes.base import check_quality, model_from_checkpoint
    from greenpipe.recipes.detect.boxes import feature_sizes, prior_boxes
    from greenpipe.recipes.detect.postprocess import detections
    from greenpipe.runtime.base import describe_host
    from greenpipe.runtime.ort import load  # not greenpipe.runtime: its registry imports the recipes

    sp = params.recipe_section("detect")
    model, ckpt = model_from_checkpoint(Path(paths["model"]) / "checkpoint.pt")
    name = Path(paths["model"]).name
    size = ckpt["model_args"]["input_size"]
    torch.set_num_threads(params.base.threads)
    macs, n_params = macs_and_params(model, torch.zeros(1, 3, size, size))
    host = describe_host(params.base.threads)
    results = {}
    for variant in sp.quantize:
        artifact = Path(paths["compiled"]) / variant / "cpu" / "model.onnx"
        if not artifact.exists():
            raise GreenpipeError(f"{artifact}: no compiled artifact of {name} {variant}; run its detect_compile stage")
        runner = load(artifact, params.base.threads, 1)
        outputs: dict[str, np.ndarray] = {}
        evaluation = recipe.evaluate(runner.run, Path(paths["data"]), outputs=outputs)
        check_quality(evaluation.quality, recipe, f"detect eval {name} {variant}")
        post = []
        priors = prior_boxes(feature_sizes(size))
        for raw in outputs.values():
            t0 = time.perf_counter()
            detections(raw[None], priors)
            post.append((time.perf_counter() - t0) * 1e3)
        with tempfile.TemporaryDirectory() as logs:
            bench = benchmark(runner, (1, 3, size, size), sp.eval.latency_s, None, logs, repeats=sp.eval.repeats)
        p50, (lo, hi) = bench["p50_ms"], bench["spread"]["p50_ms"]
        row = {"model": name, "variant": variant, "recipe": "detect", **evaluation.summary(),
               "ap50_per_class": evaluation.extra["ap50_per_class"], "params": n_params, "macs": macs,
               "latency_ms": p50, "latency_ms_spread": [lo, hi], "fps": 1000.0 / p50,
               "fps_spread": [1000.0 / hi, 1000.0 / lo], "repeats": bench["repeats"], "batch": 1,
               "loadgen_validity": bench["validity"], "postprocess_ms": float(np.median(post)),
               "model_args": ckpt["model_args"],
               "source": f"measured on {host}: ONNX Runtime on compiled artifact {artifact}, batch 1, LoadGen "
                         f"SingleStream p50, median of {bench['repeats']} runs of {sp.eval.latency_s:g} s "
                         "(min-max in *_spread), fps = 1000 / p50; mAP by pycocotools on the val tiles after "
                         "the shared numpy NMS; params and MACs counted on the float model (every Conv2d)"}
        write_json(Path(paths["out"]) / f"{variant}.json", row)
        results[variant] = {k: row[k] for k in ("map50", "map50_95", "latency_ms", "fps")}
    return {"model": name, "variants": results, "params": n_params, "macs": macs}

