"""Quantization variants: one module per variant, one registry (``VARIANTS``).

A variant is a frozen config type (its keys in params.yaml) plus a registered
handler that takes either one PyTorch model (``quantize.variants``,
:mod:`greenpipe.quant.base`) or the kernels of a split network
(``video.quantize``, :mod:`greenpipe.quant.kernels`); see
:mod:`greenpipe.quant.registry`.  Adding one is a new module here plus its
import here.  :mod:`greenpipe.quant.export` turns a model result into ONNX.
"""

from greenpipe.quant import fastft8, fp32, inc, ptq8, qat4, qat8, vitis  # noqa: F401  (registers the variants)
from greenpipe.quant import tflite_kernels, vitis_tf  # noqa: F401  (variants taking a split network)
from greenpipe.quant.base import CalibrationSet, QuantResult, quantize_variant
from greenpipe.quant.registry import (
    VARIANTS,
    Variant,
    VariantConfig,
    parse_variant,
    register_variant,
    variants_taking,
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
    "variants_taking",
]
