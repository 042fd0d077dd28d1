"""Quantization variants: one module per variant, one registry (``VARIANTS``).

A variant is a frozen config type (its keys under ``quantize.variants.<name>``)
plus a registered handler ``quantize(model, calib, config) -> QuantResult``;
see :mod:`greenpipe.quant.base`.  Adding one is a new module here plus its
import here.  :mod:`greenpipe.quant.export` turns a result into ONNX.
"""

from greenpipe.quant import fastft8, fp32, inc, ptq8, qat4, qat8, vitis  # noqa: F401  (registers the variants)
from greenpipe.quant import tflite_kernels, vitis_tf  # noqa: F401  (per-kernel variants, greenpipe.quant.kernels)
from greenpipe.quant.base import (
    VARIANTS,
    CalibrationSet,
    QuantResult,
    Variant,
    VariantConfig,
    parse_variant,
    quantize_variant,
    register_variant,
)

__all__ = [
    "VARIANTS",
    "CalibrationSet",
    "QuantResult",
    "Variant",
    "VariantConfig",
    "parse_variant",
    "quantize_variant",
    "register_variant",
]
