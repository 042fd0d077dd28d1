"""ONNX export of a :class:`~greenpipe.quant.base.QuantResult` and the scales in it.

A quantized model (Brevitas layers inside) is exported as QCDQ
(QuantizeLinear / Clip / DequantizeLinear around float ops, the exact
fixed-point model) to ``model.qcdq.onnx``; a float one as plain ONNX to
``model.onnx``.  Both use the TorchScript exporter (``dynamo=False``: the
dynamo exporter refuses Brevitas' quantized bias) with the batch, height and
width axes dynamic, so one artifact serves every image size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

EXPORT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "output"
QCDQ_FILE, FLOAT_FILE = "model.qcdq.onnx", "model.onnx"
_DYNAMIC = {0: "N", 2: "H", 3: "W"}


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` holds Brevitas quantized layers."""
    from brevitas.nn.mixin.base import QuantLayerMixin

    return any(isinstance(m, QuantLayerMixin) for m in model.modules())


def export_onnx(
    model: nn.Module, example: torch.Tensor, out_dir: str | Path, opset: int = EXPORT_OPSET
) -> Path:
    """Export ``model`` traced on ``example`` (N, C, H, W) into ``out_dir``; return the file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        opset_version=opset,
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: _DYNAMIC, OUTPUT_NAME: _DYNAMIC},
        # Weights as graph inputs could be overridden at run time, which stops
        # ORT from constant-folding them into its int8 kernels.
        keep_initializers_as_inputs=False,
    )
    model = model.eval()
    if is_quantized(model):
        from brevitas.export import export_onnx_qcdq

        path = out_dir / QCDQ_FILE
        export_onnx_qcdq(model, args=example, export_path=str(path), **kwargs)
    else:
        path = out_dir / FLOAT_FILE
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(path), **kwargs)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _const(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _tensor_key(node: onnx.NodeProto) -> str:
    """'/body/inc.1/act_quant/export_handler/QuantizeLinear' -> 'body/inc.1/act_quant'."""
    name = node.name or node.output[0]
    return name.strip("/").split("/export_handler")[0]


def onnx_scales(model: onnx.ModelProto) -> dict[str, dict]:
    """Per-tensor quantization parameters of every Q/DQ node in ``model``.

    Returns ``{tensor: {"scale", "log2_scale", "pow2", "zero_point", "dtype", "kind"}}``
    where ``kind`` is weight, bias or activation and ``pow2`` says whether the
    scale is an exact power of two (what a DPU's ``fix_point`` can express).
    """
    scales: dict[str, dict] = {}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        key = _tensor_key(node)
        if key in scales:
            continue
        scale = _const(model.graph, node.input[1])
        zp = _const(model.graph, node.input[2]) if len(node.input) > 2 else None
        if scale is None:
            continue
        values = scale.astype(np.float64).ravel()
        log2 = [math.log2(v) if v > 0 else float("nan") for v in values]
        kind = "weight" if "weight_quant" in key else "bias" if "bias_quant" in key else "activation"
        zero_points = None if zp is None else zp.ravel().tolist()
        scales[key] = {
            "scale": float(values[0]) if values.size == 1 else values.tolist(),
            "log2_scale": log2[0] if values.size == 1 else log2,
            "pow2": all(v > 0 and float(np.exp2(np.round(e))) == v for v, e in zip(values, log2)),
            "zero_point": zero_points[0] if zero_points and len(zero_points) == 1 else zero_points,
            "dtype": None if zp is None else str(zp.dtype),
            "kind": kind,
        }
    return scales
