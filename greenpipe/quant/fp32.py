"""Variant ``fp32``: the float model unchanged, the reference every variant is scored against.

params.yaml::

    quantize:
      variants:
        fp32: {}
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe import tooling


class Fp32Config(VariantConfig):
    pass


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "PyTorch", "real", "tests/quant/test_quant_variants.py and the demo's quantize stages, this CPU wheel",
    "pytest tests/quant/test_quant_variants.py", tooling.module("torch", "torch")),)


@register_variant("fp32", Fp32Config, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: Fp32Config) -> QuantResult:
    """Return a copy of ``model``; ``calib`` is not read."""
    weighted = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
    float_layers = [
        {"layer": name, "type": type(m).__name__, "why": "fp32 variant: nothing is quantized"}
        for name, m in model.named_modules()
        if isinstance(m, weighted)
    ]
    return QuantResult(
        model=copy.deepcopy(model).eval(),
        dpu_numerics=False,
        deployable_to_dpu=False,  # a DPU only runs int8
        bits={"weights": 32, "activations": 32, "bias": 32},
        report={
            "calibration": {"activations": "none", "batches": 0},
            "quantized_layers": [],
            "float_layers": float_layers,
            "passthrough_ops": [],
        },
    )
