"""Variant ``bf16``: every convolution in bfloat16 (weights, inputs and outputs rounded to bf16, fp32 accumulation).

params.yaml::

    quantize:
      variants:
        bf16: {}

The model keeps float32 tensors: each ``Conv2d`` is wrapped so that its
weight is rounded to bf16 once, and its input and output are rounded to bf16
on every call (``x.to(bfloat16).to(float32)``, which exports as a pair of ONNX
``Cast`` nodes).  That is what a native bf16 convolution (AVX512_BF16 / AMX,
e.g. OpenVINO at bf16 inference precision) computes up to the order of its
fp32 accumulation, so the artifact is the variant's numerics on any CPU.  The
report says whether this CPU runs bf16 natively (``/proc/cpuinfo`` flags
avx512_bf16 or amx_bf16) or the figures come from emulating it in fp32.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe.runtime.base import native_bf16
from greenpipe import tooling

class Bf16Config(VariantConfig):
    pass


def _round_bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(torch.float32)


class Bf16Conv2d(nn.Module):
    """A ``Conv2d`` computed on bf16-rounded weight, input and output (the float32 layout kept)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = copy.deepcopy(conv)
        with torch.no_grad():
            self.conv.weight.copy_(_round_bf16(self.conv.weight))
            if self.conv.bias is not None:
                self.conv.bias.copy_(_round_bf16(self.conv.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) float32 in and out
        return _round_bf16(self.conv(_round_bf16(x)))


def _wrap_convs(module: nn.Module) -> list[str]:
    """Replace every Conv2d under ``module`` with a Bf16Conv2d in place; the replaced layers' names."""
    names = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            setattr(module, name, Bf16Conv2d(child))
            names.append(name)
        else:
            names += [f"{name}.{n}" for n in _wrap_convs(child)]
    return names


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "PyTorch", "real", "tests/quant/test_quant_variants.py and the demo's quantize stages, this CPU wheel",
    "pytest tests/quant/test_quant_variants.py", tooling.module("torch", "torch")),)


@register_variant("bf16", Bf16Config, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: Bf16Config) -> QuantResult:
    """A copy of ``model`` with every Conv2d in bf16; ``calib`` is not read (bf16 needs no scales)."""
    model = copy.deepcopy(model).eval()
    layers = _wrap_convs(model)
    flags = native_bf16()
    return QuantResult(
        model=model,
        dpu_numerics=False,
        deployable_to_dpu=False,  # a DPU only runs int8
        bits={"weights": 16, "activations": 16, "bias": 16},
        report={
            "calibration": {"activations": "none", "batches": 0},
            "quantized_layers": [{"layer": n, "type": "Conv2d", "format": "bf16"} for n in layers],
            "float_layers": [],
            "passthrough_ops": [],
            "bf16": {
                "cpu_flags": flags,
                "execution": "native" if flags else "emulated",
                "why": (f"this CPU has {', '.join(flags)}" if flags else
                        "this CPU has neither avx512_bf16 nor amx_bf16: bf16 figures are emulated in fp32"),
            },
        },
    )
