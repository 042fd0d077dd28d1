"""Stage ``video_quantize@V``: quantize every TSM kernel with per-kernel variant V.

    python -m tasks.video_quantize --variant tflite_int8 --model models/video/tsm \
        --calib artifacts/video/calib --out artifacts/video/quant/tflite_int8 \
        --metrics metrics/video/quantize/tflite_int8.json

V is a key of ``video.quantize`` in params.yaml, handled by a variant that
takes the kernels of a split network (greenpipe/quant/registry.py): ``tflite_fp32``,
``tflite_int8`` (each kernel calibrated on its own boundary dump) and
``vitis_tf`` (frozen kernels + vai_q_tensorflow / vai_c_tensorflow, which
need the Vitis AI TensorFlow container).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.io import replacing_dir
from greenpipe.params import Params
from tasks._cli import run_stage


def video_quantize(params: Params, variant: str, model_dir: Path, calib: Path, out: Path) -> dict:
    """Write one artifact per kernel plus kernels.json under ``out``; return the variant's report."""
    from greenpipe.errors import ParamsError
    from greenpipe.models.tsm_tf import load_checkpoint, split_models
    from greenpipe.quant import parse_variant
    from greenpipe.video.env import configure_tensorflow

    variants = params.video.quantize
    if variant not in variants:
        raise ParamsError(f"video.quantize.{variant}: no such variant (params.yaml has: {', '.join(variants)})")
    handler, config = parse_variant(variant, variants[variant], "video.quantize", takes="kernels")
    configure_tensorflow(params.base.threads, params.base.tf_onednn)
    net, header = load_checkpoint(model_dir / "checkpoint.npz")
    kernels, manifest = split_models(net)
    # What the shared deploy / soak need to run the kernels as the recipe's model (a self-describing artifact).
    manifest = {**manifest, "recipe": "video", "model_args": header["model_args"]}
    with replacing_dir(out) as tmp:
        report = handler.quantize(kernels, manifest, calib, tmp, config)
    return {**report, "model": header.get("net"), "float_val_top1": header.get("val_top1")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--calib", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: video_quantize(params, args.variant, args.model, args.calib, args.out), args.params,
              args.metrics)


if __name__ == "__main__":
    main()
