"""DPU numerics for Brevitas graph quantization, shared by every DPU variant.

A Xilinx DPU computes in int8 with one power-of-two scale (``fix_point``) per
tensor, symmetric, signed everywhere (post-ReLU tensors too), with int8
biases and an int8 output.  This module builds Brevitas' default graph
quantization maps with every quantizer swapped for that format, quantizes a
float model through them and calibrates it:

    qm = quantize_graph(model, act_quantizer("percentile", 99.99))
    calibrate(qm, batches)
    correct_bias(qm, batches)          # optional

Variants (ptq8 now; fastft8, qat8, ... later) differ in how they set the
scales and weights, not in the format, so they share these helpers.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Literal

import torch
from torch import nn
from greenpipe import tooling

# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
BREVITAS = tooling.Tool(
    "Brevitas", "real", "tests/quant/test_quant_variants.py and the demo's quantize stages",
    "pytest tests/quant/test_quant_variants.py tests/quant/test_training_variants.py",
    tooling.module("brevitas", "brevitas"))
EXTERNAL_TOOLS = (BREVITAS,)  # read by the variant modules that quantize through this one


ActCalibration = Literal["minmax", "percentile", "mse"]
ACT_CALIBRATIONS: tuple[str, ...] = ("minmax", "percentile", "mse")

DPU_BITS = {"weights": 8, "activations": 8, "bias": 8}


MIN_ACT_SCALE = 2.0**-24  # smallest activation scale; a power of two (see act_quantizer)


def _quantizers():
    # Imported lazily: brevitas takes seconds to import and registers nothing we need at import time.
    from brevitas.inject import ExtendedInjector
    from brevitas.inject.enum import ScalingImplType, StatsOp
    from brevitas.quant.base import IntQuant, PerTensorPoTScaling8bit
    from brevitas.quant.fixed_point import (
        Int8ActPerTensorFixedPoint,
        Int8ActPerTensorFixedPointMSE,
        Int8BiasPerTensorFixedPointInternalScaling,
        Int8WeightPerTensorFixedPoint,
    )
    from brevitas.quant.solver.act import ActQuantSolver

    class RuntimeAbsMaxScaling(ExtendedInjector):
        # Brevitas' fixed-point "MinMaxInit" quantizers take a user-given range;
        # this one takes the range from the calibration data like the others.
        scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
        scaling_stats_op = StatsOp.MAX  # |x| max: the range of a symmetric quantizer
        collect_stats_steps = 300
        scaling_min_val = MIN_ACT_SCALE

    class Int8ActPerTensorFixedPointMax(
        IntQuant, RuntimeAbsMaxScaling, PerTensorPoTScaling8bit, ActQuantSolver
    ):
        """Signed int8, per-tensor power-of-two scale covering max |x| seen in calibration."""

    return {
        "weight": Int8WeightPerTensorFixedPoint,
        "bias": Int8BiasPerTensorFixedPointInternalScaling,
        "minmax": Int8ActPerTensorFixedPointMax,
        "percentile": Int8ActPerTensorFixedPoint,
        "mse": Int8ActPerTensorFixedPointMSE,
    }


def act_quantizer(method: ActCalibration, percentile: float = 99.999) -> Any:
    """The int8 per-tensor power-of-two activation quantizer for a calibration method.

    ``minmax``: the scale covers max |x|; ``percentile``: the ``percentile``-th
    percentile of |x| (outliers clip); ``mse``: the scale minimising the
    quantization MSE.  Statistics are taken per calibration batch and averaged
    over batches (Brevitas PTQ semantics).
    """
    quant = _quantizers()
    if method not in ACT_CALIBRATIONS:
        raise ValueError(f"act calibration {method!r}: expected one of {', '.join(ACT_CALIBRATIONS)}")
    # A tensor that is zero over the whole calibration set (a ReLU that never fires) gets the floor
    # scale: a power of two like every other DPU scale.
    floor = {"scaling_min_val": MIN_ACT_SCALE}
    if method == "percentile":
        return quant["percentile"].let(high_percentile_q=float(percentile), **floor)
    return quant[method].let(**floor)


def dpu_maps(act_quant: Any) -> dict[str, dict]:
    """Brevitas' default graph-quantization maps with every quantizer in DPU format.

    Weights: narrow int8 per-tensor pow2; biases: int8 pow2 (own scale, as the
    DPU stores them); activations, signed *and* unsigned ones (ReLU outputs):
    ``act_quant``, because the DPU's activations are signed int8 everywhere.
    Returns the keyword arguments of ``brevitas.graph.quantize.quantize``.
    """
    from brevitas.graph.quantize import COMPUTE_LAYER_MAP, QUANT_ACT_MAP, QUANT_IDENTITY_MAP

    quant = _quantizers()

    def swap(entry):
        if entry is None:
            return None
        cls, kwargs = entry
        out = {}
        for key, value in kwargs.items():
            if key.endswith("weight_quant"):
                value = quant["weight"]
            elif key.endswith("bias_quant"):
                value = quant["bias"]
            elif key.endswith("_quant"):  # act_quant, io_quant, input_quant, ...
                value = act_quant
            out[key] = value
        return cls, out

    return {
        "quant_identity_map": {k: swap(v) for k, v in QUANT_IDENTITY_MAP.items()},
        "compute_layer_map": {k: swap(v) for k, v in COMPUTE_LAYER_MAP.items()},
        "quant_act_map": {k: swap(v) for k, v in QUANT_ACT_MAP.items()},
    }


class _OutputQuant(nn.Module):
    """``body`` followed by an int8 quantizer: the DPU's output is int8 too."""

    def __init__(self, body: nn.Module, act_quant: Any):
        super().__init__()
        import brevitas.nn as qnn

        self.body = body
        self.out_quant = qnn.QuantIdentity(act_quant=act_quant, return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_quant(self.body(x))


def _graph_modules(model: nn.Module) -> list[nn.Module]:
    # Brevitas traces with its own backport of torch.fx, so check the shape, not the class.
    return [m for m in model.modules() if hasattr(getattr(m, "graph", None), "nodes")]


def _output_is_quantized(gm: nn.Module) -> bool:
    """True when the traced graph's result comes straight out of an enabled activation quantizer."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    result = output.args[0]
    if getattr(result, "op", None) != "call_module":
        return False
    module = gm.get_submodule(str(result.target))
    proxy = getattr(module, "act_quant", None)
    return proxy is not None and bool(getattr(proxy, "is_quant_enabled", False))


def quantize_graph(model: nn.Module, act_quant: Any) -> nn.Module:
    """Trace a float ``model`` and quantize it with :func:`dpu_maps` (model is not modified).

    Brevitas already re-quantizes the output of a residual add; when the
    graph ends in anything else an int8 output quantizer is appended, so the
    result is always int8 like the DPU's.  The returned module's forward gives
    a plain float tensor (the dequantized int8 values).
    """
    from brevitas.graph.quantize import preprocess_for_quantize, quantize

    gm = preprocess_for_quantize(copy.deepcopy(model).eval())
    qm = quantize(gm, **dpu_maps(act_quant))
    if not _output_is_quantized(qm):
        qm = _OutputQuant(qm, act_quant)
    return qm.eval()


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every activation scale from ``batches``; return the number of batches seen."""
    from brevitas.graph.calibrate import calibration_mode

    # calibration_mode saves and restores each quantizer's `observer_only` flag
    # per proxy; a quantizer shared by two proxies (Brevitas shares one across
    # the inputs of a concat) gets its "before" state recorded after the first
    # proxy already set it, so it stays an observer afterwards and the
    # fake-quant model silently skips quantizing those tensors (the exported
    # graph does quantize them: 1-LSB disagreements).  Restore the true state.
    observers = {m: m.observer_only for m in model.modules() if hasattr(m, "observer_only")}
    count = 0
    with torch.no_grad(), calibration_mode(model):
        for x in batches:
            model(x)
            count += 1
    for module, state in observers.items():
        module.observer_only = state
    if count == 0:
        raise ValueError("no calibration batches")
    return count


def correct_bias(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Shift each quantized layer's bias by the mean error quantization adds to its output."""
    from brevitas.graph.calibrate import bias_correction_mode

    count = 0
    with torch.no_grad(), bias_correction_mode(model):
        for x in batches:
            model(x)
            count += 1
    return count


def layer_report(model: nn.Module) -> dict[str, list[dict[str, str]]]:
    """Which layers are quantized, which stayed float and why, for quant_report.json."""
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    quantized, float_layers, passthrough = [], [], []
    for name, module in model.named_modules():
        if isinstance(module, QuantWeightBiasInputOutputLayer):
            quantized.append({"layer": name, "type": type(module).__name__})
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)):
            float_layers.append(
                {"layer": name, "type": type(module).__name__, "why": "no DPU-format quantizer mapped for it"}
            )
        elif isinstance(module, (nn.MaxPool2d, nn.Upsample)):
            passthrough.append(
                {
                    "layer": name,
                    "type": type(module).__name__,
                    "why": "max / nearest copy commute with a per-tensor scale: runs on int8 values, exact",
                }
            )
    for graph_module in _graph_modules(model):
        for node in graph_module.graph.nodes:
            if node.op == "call_function" and getattr(node.target, "__name__", "") == "cat":
                passthrough.append(
                    {
                        "layer": node.name,
                        "type": "cat",
                        "why": "inputs share one scale (aligned by Brevitas): exact",
                    }
                )
    return {"quantized_layers": quantized, "float_layers": float_layers, "passthrough_ops": passthrough}


def calibration_record(act_calibration: str, percentile: float, batches: int, corrected: int) -> dict:
    """What quant_report.json says about a PTQ calibration."""
    record = {"activations": act_calibration, "batches": batches, "bias_correction_batches": corrected}
    if act_calibration == "percentile":
        record["percentile"] = percentile
    return record
