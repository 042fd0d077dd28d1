"""The ``quantize`` stage's work: one variant over the float model, exported to ONNX and scored.

:func:`quantize_stage` feeds the variant (``quantize.variants.<name>`` in
params.yaml, a handler in this package) the calibration dump at the recipe's
boundary, exports the result (QCDQ for Brevitas variants, QDQ for the PT2E
graph of ``inc``, plain ONNX for float) and scores the fake-quant PyTorch
model on val; its val outputs are kept as the reference the compile stage
checks the deployed artifact against.  Output layout:
:mod:`greenpipe.quant.artifact`.  Run it as ``python -m tasks.quantize``.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import torch

from greenpipe.errors import GreenpipeError
from greenpipe.io import write_json
from greenpipe.params import Params
from greenpipe.quant import CalibrationSet, parse_variant, quantize_variant
from greenpipe.quant.artifact import REFERENCE_FILE, REPORT_FILE, write_reference
from greenpipe.quant.context import QuantContext, quant_context
from greenpipe.quant.export import (
    EXPORT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    QCDQ_FILE,
    QDQ_FILE,
    export_onnx,
    onnx_scales,
)
from greenpipe.recipes import get_recipe
from greenpipe.recipes.base import check_quality, model_from_checkpoint


def _model_input_boundary(recipe, model) -> str:
    bounds = recipe.boundaries(model)
    inputs = [name for name, module in bounds.items() if module is None]
    if len(bounds) != 1 or not inputs:
        raise GreenpipeError(
            f"recipe {recipe.name!r} cuts its model at {list(bounds)}; the quantize stage handles one kernel "
            "fed at the model input only (per-kernel quantization of split pipelines is not implemented yet)"
        )
    return inputs[0]


def _torch_runner(model: torch.nn.Module):
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return getattr(out, "value", out).numpy()  # a QuantTensor's dequantized values

    return run


def quantize_stage(
    params: Params, variant: str, model_dir: Path, calib_dir: Path, data_dir: Path, out: Path,
    variants_key: str = "quantize.variants", net: str = "",
) -> dict:
    """Write ``out``'s model, quant_report.json and reference_val.npz; return the metrics.

    ``variant`` is a key of the table ``variants_key`` names (:meth:`Params.variant_table`).
    ``net`` picks the recipe's network for its training task (as the train stage's ``--net``);
    only variants that train (qat8, qat4, vitis_qat) build that task.
    """
    t0 = time.perf_counter()
    torch.set_num_threads(params.base.threads)
    torch.manual_seed(params.base.seed)
    variants = params.variant_table(variants_key)
    if variant not in variants:
        raise GreenpipeError(
            f"--variant {variant}: not in {variants_key} (params.yaml has: {', '.join(variants)})"
        )
    handler, config = parse_variant(variant, variants[variant], variants_key)

    model, ckpt = model_from_checkpoint(model_dir / "checkpoint.pt")
    recipe = get_recipe(ckpt["recipe"])
    multiple = recipe.multiple(ckpt["model_args"])
    boundary = _model_input_boundary(recipe, model)
    calib = CalibrationSet(calib_dir, boundary)

    t_quant = time.perf_counter()
    training = partial(recipe.training, params, data_dir, **({"net": net} if net else {}))
    context = QuantContext(data=data_dir, training=training, seed=params.base.seed, out=out,
                           recipe=ckpt["recipe"], multiple=multiple, threads=params.base.threads)
    with quant_context(context):  # what training variants (qat8, qat4, fastft8) read besides calibration
        result = quantize_variant(variant, variants, model, calib, key_prefix=variants_key)
    quant_s = time.perf_counter() - t_quant

    example = next(iter(calib))
    artifact = export_onnx(result.model, example, out, EXPORT_OPSET)
    scales = onnx_scales(onnx.load(artifact))

    outputs: dict[str, np.ndarray] = {}
    evaluation = recipe.evaluate(_torch_runner(result.model), data_dir, 0, multiple=multiple, outputs=outputs)
    check_quality(evaluation.quality, recipe, f"quantize {variant}")
    write_reference(out / REFERENCE_FILE, outputs)

    calibration = {
        **result.report.get("calibration", {}),
        "boundary": boundary,
        "samples_available": len(calib),
        "sample_shape": list(example.shape),
    }
    report = {
        "variant": variant,
        "method": handler.name,
        "config": config.model_dump(),
        "recipe": ckpt["recipe"],
        "model_args": ckpt["model_args"],
        "multiple": multiple,
        "checkpoint_fingerprint": ckpt.get("data_fingerprint"),
        "artifact": artifact.name,
        "format": {QCDQ_FILE: "qcdq", QDQ_FILE: "qdq"}.get(artifact.name, "float"),
        "opset": EXPORT_OPSET,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "dynamic_axes": "N, H, W (ORT runs any size that is a multiple of `multiple`)",
        "bits": result.bits,
        "dpu_numerics": result.dpu_numerics,
        "deployable_to_dpu": result.deployable_to_dpu,
        "scales_all_pow2": all(s["pow2"] for s in scales.values()) if scales else None,
        "scales": scales,
        "calibration": calibration,
        **{k: v for k, v in result.report.items() if k != "calibration"},
        "reference": {
            "file": REFERENCE_FILE,
            "what": "fake-quant PyTorch model's post-processed val outputs (whole samples), float32, by sample name",
        },
        "quantize_s": quant_s,
        "wall_s": time.perf_counter() - t0,
    }
    write_json(out / REPORT_FILE, report)
    return {
        "variant": variant,
        "model": Path(model_dir).as_posix(),  # which float model: a recipe may quantize several
        **evaluation.summary(),
        "bits": result.bits,
        "dpu_numerics": result.dpu_numerics,
        "deployable_to_dpu": result.deployable_to_dpu,
        "scales_all_pow2": report["scales_all_pow2"],
        "calibration_batches": calibration.get("batches", 0),
        "quantize_s": quant_s,
        "wall_s": report["wall_s"],
        **result.metrics,  # what the variant adds (inc: its tuning trials)
        "source": "fake-quant PyTorch model on val (not the deployed artifact)",
    }
