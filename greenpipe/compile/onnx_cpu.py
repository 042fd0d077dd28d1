"""Target format ``onnx``: a portable ONNX model that ONNX Runtime runs in int8 on a CPU.

A quantized variant's QCDQ export goes through the exact rewrite of
:mod:`greenpipe.compile.qdq` (ORT then fuses every ``DQ -> Conv -> Q`` into a
U8S8 ``QLinearConv``); a float export passes through.  No ORT offline
optimization is baked in: the artifact stays a standard-opset ONNX file any
ONNX runtime can load, and ORT optimizes it for the host at load time.

Before anything is written as done, the artifact is checked
(``onnx.checker`` with full shape inference), loaded in ORT, and run on every
val image; its outputs must agree with the fake-quant model's
(``reference_val.npz``) within ``compile.targets.<target>.agreement_tolerance``,
but for isolated rounding flips (:mod:`greenpipe.compile.agreement`).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx

from greenpipe.compile import agreement
from greenpipe.compile.base import REPORT_FILE, TARGETS, CompileJob
from greenpipe.compile.qdq import to_ort_qdq
from greenpipe.errors import GreenpipeError
from greenpipe.io import atomic_write_bytes, write_json
from greenpipe.quant.artifact import read_quant_artifact
from greenpipe.recipes import get_recipe
from greenpipe.runtime import ort

ARTIFACT = "model.onnx"


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _is_qcdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def build(source: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, dict]:
    """The deployable model for ``source`` and what was done to it."""
    rewrite: dict = {}
    model = source
    if _is_qcdq(source):
        model, rewrite = to_ort_qdq(source)
    if _opset(model) != opset:
        from onnx import version_converter

        model = version_converter.convert_version(model, opset)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise GreenpipeError(f"compiled ONNX model fails onnx.checker: {exc}") from None
    return model, rewrite


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = ort.EXTERNAL_TOOLS  # the agreement check runs the artifact in ONNX Runtime


@TARGETS.register("onnx")
def compile_onnx(job: CompileJob) -> dict:
    """Compile ``job.quant_dir``'s export into ``job.out_dir/model.onnx``; return metrics."""
    quant = read_quant_artifact(job.quant_dir)
    source = onnx.load(quant.onnx_path)
    model, rewrite = build(source, job.params.opset)
    path = job.out_dir / ARTIFACT
    atomic_write_bytes(path, model.SerializeToString())

    with tempfile.TemporaryDirectory() as tmp:
        # ORT writes the graph it will execute: the proof that the convs run as int8 kernels.
        optimized_path = Path(tmp) / "ort_optimized.onnx"
        runner = ort.OrtRunner(path, job.threads, 1, optimized_model_path=optimized_path)
        ort_ops = _op_counts(onnx.load(optimized_path))

    recipe = get_recipe(quant.report["recipe"])
    outputs: dict = {}
    evaluation = recipe.evaluate(runner.run, job.data_dir, 0, multiple=quant.report["multiple"], outputs=outputs)
    agreed = agreement.compare(outputs, quant.reference(), job.params.agreement_tolerance)

    ops = _op_counts(model)
    convs = ops.get("Conv", 0) + ops.get("ConvInteger", 0)
    int8_convs = ort_ops.get("QLinearConv", 0)
    report = {
        "variant": job.variant,
        "target": job.target,
        "format": job.params.format,
        "artifact": ARTIFACT,
        "source_artifact": str(quant.onnx_path),
        "recipe": quant.report["recipe"],
        "model_args": quant.report["model_args"],
        "multiple": quant.report["multiple"],
        "dpu_numerics": quant.report["dpu_numerics"],
        "opset": job.params.opset,
        "model_mb": path.stat().st_size / 1e6,
        "rewrite": rewrite,
        "ops": ops,
        "ort_optimized_ops": ort_ops,
        "convs": convs,
        "ort_int8_convs": int8_convs,
        "runner": runner.describe(),
        "agreement": {
            **agreed,
            "tolerance": job.params.agreement_tolerance,
            "reference": "fake-quant PyTorch model on val (reference_val.npz of the quantize stage)",
        },
        "val_quality": evaluation.summary(),
    }
    write_json(job.out_dir / REPORT_FILE, report)
    agreement.check(agreed, job.params.agreement_tolerance, job.variant, job.target)
    return {
        "variant": job.variant,
        "target": job.target,
        "model_mb": report["model_mb"],
        "convs": convs,
        "ort_int8_convs": int8_convs,
        "agreement": {
            "max_abs_diff": agreed["max_abs_diff"],
            "mean_abs_diff": agreed["mean_abs_diff"],
            "min_sqnr_db": agreed["min_sqnr_db"],
            "worst_sample": agreed["worst_sample"],
            "tolerance": job.params.agreement_tolerance,
            **({"outliers": agreed["outliers"]} if "outliers" in agreed else {}),
        },
        **evaluation.summary(),
        "source": f"compiled artifact on val, {report['runner']['host']}, {report['runner']['label']}",
    }
