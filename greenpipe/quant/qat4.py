"""Variant ``qat4``: quantization-aware training with 4-bit weights (simulation only).

The training of :mod:`greenpipe.quant.qat8` with 4-bit weights (signed,
narrow range [-7, 7], per-tensor power-of-two scale) and 8-bit activations,
or 4-bit ones with ``act_bits: 4``.  No DPU runs 4-bit (the Vitis AI DPUs
are int8 only): ``deployable_to_dpu`` is false and ``dpu_numerics`` is false
(the format is DPU-like, the bit width is not).  It still exports (QCDQ with
Clip to the 4-bit range) and runs on the CPU target through ONNX Runtime,
exactly as the fake-quant model computes, so its accuracy is measured the
same way as every other variant's.

params.yaml::

    quantize:
      variants:
        qat4:
          act_bits: 8          # 8 | 4
          steps: {quick: 200, full: 6000}
          # ... every other key as qat8
"""

from __future__ import annotations

from typing import Iterable, Literal

import torch
from pydantic import Field
from torch import nn

from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import register_variant
from greenpipe.quant.qat8 import Qat8Config, run_qat
from greenpipe.quant import dpu

WEIGHT_BITS = 4


class Qat4Config(Qat8Config):
    act_bits: Literal[4, 8] = 8
    steps: int = Field(200, ge=1)
    lr: float = Field(2e-4, gt=0, le=1)  # 4-bit weights move further from their float values


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = dpu.EXTERNAL_TOOLS


@register_variant("qat4", Qat4Config, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: Qat4Config) -> QuantResult:
    """Quantize a float ``model`` with 4-bit weights (and ``act_bits`` activations), calibrate, train."""
    qm, report = run_qat("qat4", model, calib, config, weight_bits=WEIGHT_BITS, act_bits=config.act_bits)
    report["simulation_only"] = "4-bit: no DPU runs it; evaluated on the CPU target through ONNX Runtime"
    return QuantResult(
        model=qm,
        dpu_numerics=False,
        deployable_to_dpu=False,
        bits={"weights": WEIGHT_BITS, "activations": config.act_bits, "bias": 8},
        report=report,
    )
