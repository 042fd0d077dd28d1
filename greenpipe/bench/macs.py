"""Multiply-accumulates per query of a compiled ONNX artifact, counted from its graph.

The deploy stage records them beside latency and fps (``gmacs``), so a row's arithmetic rate
(GMAC/s = GMACs x fps) and its fraction of the host's measured peak (benchmarks/cpu_peak.py) can be
read off the metrics. Counted, not estimated: ONNX shape inference with the graph input fixed to
the query's shape, then per node

* Conv / ConvInteger / QLinearConv: N x C_out x H_out x W_out x (C_in / groups) x kH x kW
  (the weight's shape is read off the initializer or the DequantizeLinear that feeds it);
* MatMul / Gemm / MatMulInteger / QLinearMatMul: the output's elements x the shared dimension.

Everything else (activations, pooling, resizes, element-wise ops) is not a MAC and is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
MATMUL_A_INPUT = {"MatMul": 0, "Gemm": 0, "MatMulInteger": 0, "QLinearMatMul": 0}


def onnx_macs(path: str | Path, input_shape: tuple[int, ...] | list[int]) -> int:
    """MACs of one inference of the ONNX model at ``path`` on an input of ``input_shape``."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, input_shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = int(size)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    total = 0
    for node in model.graph.node:
        if node.op_type in WEIGHT_INPUT:
            c_in_per_group, *kernel = shapes[node.input[WEIGHT_INPUT[node.op_type]]][1:]
            total += int(np.prod(shapes[node.output[0]])) * c_in_per_group * int(np.prod(kernel))
        elif node.op_type in MATMUL_A_INPUT:
            a = shapes[node.input[MATMUL_A_INPUT[node.op_type]]]
            trans_a = node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)
            total += int(np.prod(shapes[node.output[0]])) * int(a[-2] if trans_a else a[-1])
    return total


def artifact_macs(artifact: str | Path, input_shape: tuple[int, ...] | list[int]) -> dict:
    """The deploy metrics' ``gmacs`` entry for ``artifact`` (None where it is not an ONNX graph)."""
    if Path(artifact).suffix != ".onnx":
        return {"gmacs": None, "gmacs_source": f"not counted: {Path(artifact).name} is not an ONNX graph"}
    return {"gmacs": onnx_macs(artifact, input_shape) / 1e9,
            "gmacs_source": f"counted from the artifact's ONNX graph at {'x'.join(map(str, input_shape))} "
                            "(Conv, MatMul, Gemm and their integer forms)"}
