"""Quantization variants: one module per variant, one registry (``VARIANTS``).

A variant is a frozen config type (its keys in params.yaml) plus a registered
handler that takes either one PyTorch model (``quantize.variants``,
:mod:`greenpipe.quant.base`) or the kernels of a split network
(``video.quantize``, :mod:`greenpipe.quant.kernels`); see
:mod:`greenpipe.quant.registry`.  Adding one is a new module here plus its
name in ``registry.HANDLER_MODULES``.  :mod:`greenpipe.quant.export` turns a
model result into ONNX.

Importing this package is cheap: the handlers' modules (torch, TensorFlow) load
when a registry lookup first needs them, and only those of the kind looked up,
so a stage that quantizes kernels never imports torch.
"""

from greenpipe.quant.registry import (
    Variant,
    VariantConfig,
    load_handlers,
    parse_variant,
    register_variant,
    variants_taking,
)

# Names served on first use (PEP 562): the filled registry, and the model-variant base (imports torch).
_BASE_NAMES = ("CalibrationSet", "QuantResult", "quantize_variant")


def __getattr__(name: str):
    if name == "VARIANTS":
        from greenpipe.quant.registry import VARIANTS

        load_handlers()
        return VARIANTS
    if name in _BASE_NAMES:
        from greenpipe.quant import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "VARIANTS",
    "CalibrationSet",
    "QuantResult",
    "Variant",
    "VariantConfig",
    "load_handlers",
    "parse_variant",
    "quantize_variant",
    "register_variant",
    "variants_taking",
]
