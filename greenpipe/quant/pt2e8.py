"""Variant ``pt2e8``: PyTorch's own static int8 for x86 (torch.export + torchao's PT2E flow), no tuning.

params.yaml::

    quantize:
      variants:
        pt2e8:
          calib_samples: 16     # calibration crops (0 = every dumped crop)

This is the comparison beside ``inc``: the same quantizer (torchao's
``X86InductorQuantizer`` in its default configuration: uint8 asymmetric
per-tensor activations with a histogram observer, int8 symmetric weights
per output channel, float scales) run the way PyTorch documents it, ``prepare_pt2e`` ->
calibrate -> ``convert_pt2e``, once, with no accuracy-aware search.  What
``inc`` adds on top (trying observers and float layers until the val metric
is within its tolerance) is then the difference between the two rows.  Like
``inc`` it is **not DPU numerics**; its biases are snapped onto the int32
accumulator grid the same way, so the compiled ONNX computes this model.
"""

from __future__ import annotations

import itertools
import logging
from typing import Iterable

import torch
from pydantic import Field
from torch import nn

from greenpipe import tooling
from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.quant.base import QuantResult
from greenpipe.quant.inc import export_inputs, layer_report, require_float, snap_bias_to_accumulator, to_eval
from greenpipe.quant.registry import VariantConfig, register_variant

LABEL = "Intel x86 path (PyTorch PT2E)"
NUMERICS = (
    "x86 int8 (PyTorch PT2E, torchao X86InductorQuantizer default): uint8 asymmetric activations, int8 "
    "symmetric weights, float scales; not DPU numerics"
)


class Pt2e8Config(VariantConfig):
    calib_samples: int = Field(16, ge=0)  # crops; 0 = every dumped crop


def _torchao():
    logging.getLogger("torchao").setLevel(logging.ERROR)  # CUDA-only kernel libraries it cannot load here
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as exc:
        raise ToolchainMissing(
            f"variant pt2e8 needs torchao's PT2E quantization ({exc}); install the project's dependencies "
            "(`pip install -e .` brings torchao with neural-compressor-pt)"
        ) from None
    return prepare_pt2e, convert_pt2e, x86


EXTERNAL_TOOLS = (tooling.Tool(
    "torchao PT2E (X86InductorQuantizer)", "real", "tests/quant/test_pt2e8.py and the demo's segment quantize@pt2e8",
    "pytest tests/quant/test_pt2e8.py", tooling.module("torchao", "torchao")),)


@register_variant("pt2e8", Pt2e8Config, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: Pt2e8Config) -> QuantResult:
    """Export ``model``, calibrate it on ``calib_samples`` of ``calib`` and convert it to int8 once."""
    require_float(model, "pt2e8")
    batches = list(itertools.islice(calib, config.calib_samples or None))
    if not batches:
        raise GreenpipeError("pt2e8: no calibration batches; rerun the calibration dump stage")
    prepare_pt2e, convert_pt2e, x86 = _torchao()
    example, dynamic = export_inputs(batches)
    # strict, as INC exports: the non-strict graph of a conv feeding two adds trips the x86 fusion annotation
    exported = torch.export.export(model.eval(), example, dynamic_shapes=dynamic, strict=True).module()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
    qmodel = convert_pt2e(prepared, fold_quantize=False)  # weights stay float + quantize ops, as under INC
    to_eval(qmodel)
    snapped = snap_bias_to_accumulator(qmodel)
    layers = layer_report(model, qmodel, [])
    return QuantResult(
        model=qmodel,
        dpu_numerics=False,
        deployable_to_dpu=False,
        bits={"weights": 8, "activations": 8, "bias": 32},
        report={
            "numerics": NUMERICS,
            "calibration": {
                "activations": "histogram observer (X86InductorQuantizer default), uint8 asymmetric per tensor",
                "weights": "minmax, symmetric int8, per_channel",
                "batches": len(batches),
                "method": "PyTorch PT2E static PTQ: torch.export, prepare_pt2e, calibrate, convert_pt2e; "
                "no accuracy-aware tuning",
            },
            "bias": {
                "what": "snapped to int32 at s_x * s_w per output channel (what QLinearConv adds)",
                "convs": snapped["convs"],
                "max_abs_change": snapped["max_abs_change"],
            },
            **layers,
        },
        metrics={"numerics": LABEL},
    )
