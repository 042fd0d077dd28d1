"""Variant ``ptq8``: post-training int8 quantization with DPU numerics (Brevitas).

The float model is traced and every conv, activation and residual add gets a
DPU-format quantizer (int8, per-tensor, symmetric, power-of-two scale; see
:mod:`greenpipe.quant.dpu`); activation scales come from the calibration
batches, optionally followed by bias correction.  No weight is trained.

params.yaml::

    quantize:
      variants:
        ptq8:
          act_calibration: percentile   # minmax | percentile | mse
          percentile: 99.99             # used by `percentile` only
          bias_correction: true
"""

from __future__ import annotations

from typing import Iterable

import torch
from pydantic import Field
from torch import nn

from greenpipe.errors import GreenpipeError
from greenpipe.quant import dpu
from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe.quant.export import is_quantized


class Ptq8Config(VariantConfig):
    act_calibration: dpu.ActCalibration = "percentile"
    percentile: float = Field(99.99, gt=50, le=100)  # of |activation|, per calibration batch
    bias_correction: bool = True


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = dpu.EXTERNAL_TOOLS


@register_variant("ptq8", Ptq8Config, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: Ptq8Config) -> QuantResult:
    """Quantize a float ``model``; ``calib`` is iterated once, twice with bias correction."""
    if is_quantized(model):
        raise GreenpipeError(
            "ptq8 quantizes a float model, but it was given an already-quantized one; "
            "point its `start_from:` at a float variant (or remove it)"
        )
    act_quant = dpu.act_quantizer(config.act_calibration, config.percentile)
    qm = dpu.quantize_graph(model, act_quant)
    batches = dpu.calibrate(qm, calib)
    corrected = dpu.correct_bias(qm, calib) if config.bias_correction else 0
    calibration = dpu.calibration_record(config.act_calibration, config.percentile, batches, corrected)
    return QuantResult(
        model=qm.eval(),
        dpu_numerics=True,
        deployable_to_dpu=True,
        bits=dict(dpu.DPU_BITS),
        report={"calibration": calibration, **dpu.layer_report(qm)},
    )
