"""ONNX export of a :class:`~greenpipe.quant.base.QuantResult` and the scales in it.

A quantized model (Brevitas layers inside) is exported as QCDQ
(QuantizeLinear / Clip / DequantizeLinear around float ops, the exact
fixed-point model) to ``model.qcdq.onnx``; a float one as plain ONNX to
``model.onnx``.  Both use the TorchScript exporter (``dynamo=False``: the
dynamo exporter refuses Brevitas' quantized bias) with the batch, height and
width axes dynamic, so one artifact serves every image size.

A PT2E-quantized graph module (``inc``: quantize / dequantize ops of
``torch.ops.quantized_decomposed`` around float ops) goes through the dynamo
exporter instead, whose torchlib maps those ops onto QuantizeLinear /
DequantizeLinear one for one, to ``model.qdq.onnx``; batch, height and width
stay dynamic there too.  Its Q/DQ nodes are named after the tensor they
quantize (``inc.0.weight``, ``input``, ``inc.2/maxpool``, ...) and its convs
after their layer (``/inc.0/Conv``), as in the other exports.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

EXPORT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "output"
QCDQ_FILE, QDQ_FILE, FLOAT_FILE = "model.qcdq.onnx", "model.qdq.onnx", "model.onnx"
_DYNAMIC = {0: "N", 2: "H", 3: "W"}


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` holds Brevitas quantized layers.

    A model holding them has imported Brevitas; when it is not imported, the answer is no without the
    1.5 s its import takes (every fp32, bf16 and x86 int8 quantize and compile stage asks).
    """
    mixin = sys.modules.get("brevitas.nn.mixin.base")
    return mixin is not None and any(isinstance(m, mixin.QuantLayerMixin) for m in model.modules())


def is_pt2e_quantized(model: nn.Module) -> bool:
    """True when ``model`` is a graph module holding PT2E quantize / dequantize ops (INC, torchao)."""
    graph = getattr(model, "graph", None)
    return isinstance(graph, torch.fx.Graph) and any(
        node.op == "call_function" and getattr(node.target, "namespace", None) == "quantized_decomposed"
        for node in graph.nodes
    )


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
    if isinstance(model, torch.fx.GraphModule) and not is_quantized(model):
        # A torch.export graph module (inc's; it refuses .eval() and has no train-mode ops left);
        # float when a tuning trial kept every layer float.
        path = out_dir / (QDQ_FILE if is_pt2e_quantized(model) else FLOAT_FILE)
        _export_pt2e(model, example, path, opset)
        onnx.checker.check_model(str(path), full_check=True)
        return path
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


def _export_pt2e(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    from torch.export import Dim

    # torch.export pins a batch of 1 as a constant: trace with two samples.
    example = example if example.shape[0] > 1 else torch.cat([example, example])
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            verbose=False,
        )
    exported = program.model_proto
    for value in (*exported.graph.input, *exported.graph.output):
        for axis, name in _DYNAMIC.items():
            value.type.tensor_type.shape.dim[axis].dim_param = name
    _name_qdq_nodes(exported.graph)
    path.write_bytes(exported.SerializeToString())


_COPY_OPS = {"MaxPool": "maxpool", "Resize": "upsample"}


def _name_qdq_nodes(graph: onnx.GraphProto) -> None:
    """Name convs after their layer and Q/DQ nodes after the tensor they quantize (see module doc)."""
    inits = {i.name for i in graph.initializer}
    inputs = {i.name for i in graph.input}
    producer = {out: node for node in graph.node for out in node.output}

    def weight_of(tensor: str) -> str | None:
        while tensor not in inits:
            node = producer.get(tensor)
            if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Clip"):
                return None
            tensor = node.input[0]
        return tensor

    def key(tensor: str) -> str:
        if tensor in inputs or tensor in inits:
            return tensor
        node = producer.get(tensor)
        if node is None:
            return tensor
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Clip", "Relu"):
            return key(node.input[0])
        if node.op_type == "Conv":
            weight = weight_of(node.input[1])
            return weight.rsplit(".", 1)[0] if weight else node.name
        if node.op_type in _COPY_OPS:
            return f"{key(node.input[0])}/{_COPY_OPS[node.op_type]}"
        if node.op_type == "Concat":
            return f"concat({', '.join(key(i) for i in node.input)})"
        return node.name or tensor

    seen: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            stem = f"{key(node.input[0])}/{node.op_type}"
        elif node.op_type == "Conv" and (weight := weight_of(node.input[1])):
            stem = f"/{weight.rsplit('.', 1)[0]}/Conv"
        else:
            continue
        seen[stem] = seen.get(stem, 0) + 1
        node.name = stem if seen[stem] == 1 else f"{stem}_{seen[stem] - 1}"


def _const(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _tensor_key(node: onnx.NodeProto) -> str:
    """'/body/inc.1/act_quant/export_handler/QuantizeLinear' -> 'body/inc.1/act_quant' (Brevitas);
    'inc.2/maxpool/DequantizeLinear_1' -> 'inc.2/maxpool' (PT2E, named by :func:`_name_qdq_nodes`)."""
    name = (node.name or node.output[0]).strip("/")
    if "/export_handler" in name:
        return name.split("/export_handler")[0]
    head, _, tail = name.rpartition("/")
    return head if head and tail.startswith(("QuantizeLinear", "DequantizeLinear")) else name


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
        kind = (
            "weight" if "weight_quant" in key or key.endswith(".weight")
            else "bias" if "bias_quant" in key or key.endswith(".bias")
            else "activation"
        )
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
