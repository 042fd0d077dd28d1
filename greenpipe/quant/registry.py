"""The one registry of quantization variants: a frozen config type plus one handler each.

A variant is one module in this package.  It declares the keys it reads in
params.yaml as a pydantic model, registers one handler and says what that
handler takes::

    class Ptq8Config(VariantConfig):
        act_calibration: Literal["minmax", "percentile", "mse"] = "percentile"

    @register_variant("ptq8", Ptq8Config, takes="model")
    def quantize(model, calib, config) -> QuantResult: ...

    @register_variant("tflite_int8", TfliteInt8Config, takes="kernels")
    def quantize(kernels, manifest, calib, out, config) -> dict: ...

``takes="model"``: one PyTorch model fed calibration batches at one boundary
(stage ``quantize``, entries under ``quantize.variants``;
:mod:`greenpipe.quant.base`).  ``takes="kernels"``: the float Keras kernels
of a split network in pipeline order, its split manifest, the per-kernel
calibration dump and the output directory (stage ``video_quantize``, entries
under ``video.quantize``; :mod:`greenpipe.quant.kernels`).

An entry's key is the variant's name and, unless the entry says
``method: <registered name>``, also the handler it runs, so two
configurations of one method (``ptq8`` and ``ptq8_mse: {method: ptq8, ...}``)
are two DVC branches without new code.  This module imports neither torch nor
TensorFlow; the handlers' modules do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from greenpipe.errors import ParamsError
from greenpipe.errors import UNKNOWN_VARIANT_KEY, invalid_params
from greenpipe.registry import Registry

Takes = Literal["model", "kernels"]

# What a variant of each kind takes, and what its registered methods are called in errors.
TAKES: dict[str, str] = {"model": "one PyTorch model", "kernels": "the kernels of a split network"}
METHOD_KIND: dict[str, str] = {"model": "quantization", "kernels": "per-kernel quantization"}
SECTION: dict[str, str] = {"model": "quantize.variants", "kernels": "video.quantize"}  # where params.yaml has them

# The modules of this package that register handlers, by what their handlers take; importing one
# registers its variants (the model ones import torch, the kernel ones do not).
HANDLER_MODULES: dict[str, tuple[str, ...]] = {
    "model": ("bf16", "fastft8", "fp32", "inc", "ptq8", "pt2e8", "qat4", "qat8", "vitis"),
    "kernels": ("tflite_kernels", "vitis_tf"),
}


class VariantConfig(BaseModel):
    """Keys every variant accepts; a variant's config subclasses this."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)  # .inf / .nan: refused

    method: str | None = None  # registered handler to run; default: the variant's own name
    # Another entry this one refines; model variants only (greenpipe.quant.base.quantize_variant).
    start_from: str | None = None
    _key: str = PrivateAttr(default="")  # set by parse_variant

    @property
    def key(self) -> str:
        """Where the entry is in params.yaml (``quantize.variants.inc``, ``segment.variants.inc``): errors name it.

        Set by :func:`parse_variant`; a config built in code names its method under ``quantize.variants``.
        """
        return self._key or f"quantize.variants.{self.method or '<variant>'}"


@dataclass(frozen=True)
class Variant:
    name: str
    config_type: type[VariantConfig]
    quantize: Callable[..., Any]  # takes="model": (model, calib, config) -> QuantResult; "kernels": see above
    takes: Takes


VARIANTS: Registry[Variant] = Registry("quantization variant")


def register_variant(name: str, config_type: type[VariantConfig], *, takes: Takes) -> Callable:
    """Decorator: register the handler as variant ``name``; ``takes`` says what it quantizes (see above)."""
    if takes not in TAKES:
        raise ValueError(f"variant {name!r}: takes={takes!r}, expected one of {', '.join(TAKES)}")

    def decorate(fn: Callable) -> Callable:
        VARIANTS.register(name)(Variant(name, config_type, fn, takes))
        return fn

    return decorate


def load_handlers(*kinds: Takes) -> None:
    """Import the handler modules of ``kinds`` (default: every kind), which registers their variants."""
    for kind in kinds or tuple(HANDLER_MODULES):
        for module in HANDLER_MODULES[kind]:
            importlib.import_module(f"{__package__}.{module}")


def variants_taking(takes: Takes) -> list[str]:
    """The registered variants that take ``takes``, sorted."""
    load_handlers(takes)
    return [n for n in VARIANTS.names() if VARIANTS.get(n).takes == takes]


def wrong_kind(variant: Variant, takes: Takes) -> str:
    """Why ``variant`` cannot serve a stage that quantizes what ``takes`` names (the caller adds the key)."""
    return (f"{variant.name!r} takes {TAKES[variant.takes]}; this stage quantizes {TAKES[takes]} "
            f"(move the entry to {SECTION[variant.takes]}, or pick one of: "
            f"{', '.join(variants_taking(takes))})")


def parse_variant(name: str, raw: Mapping[str, Any] | None, key_prefix: str = "quantize.variants",
                  takes: Takes = "model") -> tuple[Variant, VariantConfig]:
    """Look up the handler of ``<key_prefix>.<name>`` for a stage that quantizes ``takes``; validate its keys.

    Raises ParamsError naming ``<key_prefix>.<name>[.<key>]`` for an unregistered
    method, a variant of the other kind, or a bad key or value.
    """
    key = f"{key_prefix}.{name}"
    raw = dict(raw or {})
    method = raw.get("method") or name
    known = variants_taking(takes)
    if not isinstance(method, str) or method not in known:
        load_handlers()  # the other kind's too: a variant of the wrong kind gets its own message
        if isinstance(method, str) and method in VARIANTS:
            raise ParamsError(f"{key}: {wrong_kind(VARIANTS.get(method), takes)}")
        raise ParamsError(
            f"{key}: no registered {METHOD_KIND[takes]} method {method!r} (registered: {', '.join(known)}); "
            f"name the entry after one of them or set `method:` to one"
        )
    variant = VARIANTS.get(method)
    try:
        config = variant.config_type.model_validate(raw)
    except ValidationError as exc:
        raise invalid_params(exc, key=key, unknown_key=UNKNOWN_VARIANT_KEY) from None
    if config.start_from is not None and takes != "model":
        raise ParamsError(f"{key}.start_from = {config.start_from!r}: only variants that take "
                          f"{TAKES['model']} start from another variant's output; remove the key")
    config._key = key
    return variant, config
