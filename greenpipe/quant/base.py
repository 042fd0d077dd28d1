"""The quantization-variant interface: a frozen config type plus one handler.

A variant is one module in this package.  It declares the keys it reads under
``quantize.variants.<name>`` in params.yaml as a pydantic model and registers
one function that quantizes a float model with calibration batches::

    class Ptq8Config(VariantConfig):
        act_calibration: Literal["minmax", "percentile", "mse"] = "percentile"

    @register_variant("ptq8", Ptq8Config)
    def quantize(model, calib, config) -> QuantResult: ...

The key under ``quantize.variants`` is the variant's name and, unless the
entry says ``method: <registered name>``, also the handler it runs, so two
configurations of one method (``ptq8`` and ``ptq8_mse: {method: ptq8, ...}``)
are two DVC branches without new code.  ``start_from: <other key>`` chains
variants: the other variant runs first and this one starts from its model
(QAT from a PTQ model, say); see :func:`quantize_variant`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from greenpipe.calib import iter_boundary, read_manifest
from greenpipe.errors import GreenpipeError, ParamsError
from greenpipe.params import UNKNOWN_VARIANT_KEY, invalid_params
from greenpipe.registry import Registry


class VariantConfig(BaseModel):
    """Keys every variant accepts; a variant's config subclasses this."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    method: str | None = None  # registered handler to run; default: the variant's own name
    start_from: str | None = None  # another variant (key in quantize.variants) this one refines


@dataclass(frozen=True)
class QuantResult:
    """What a variant hands to export: the model and what its numerics are.

    ``model`` is in eval mode and its forward returns a plain float tensor
    (the fake-quantized values for a quantized variant).  ``bits`` names the
    bit width of weights, activations and biases.  ``report`` holds whatever
    the variant wants recorded in quant_report.json (calibration method,
    layers left in float and why, ...); ``metrics`` the few figures it adds to
    the stage's metrics JSON (inc: its tuning trials).
    """

    model: nn.Module
    dpu_numerics: bool  # int8, per-tensor, symmetric, power-of-two scales everywhere (what a DPU computes)
    deployable_to_dpu: (
        bool  # the Vitis AI compiler can take it (4-bit simulation is dpu_numerics-like but not)
    )
    bits: dict[str, int]
    report: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[nn.Module, Iterable[torch.Tensor], Any], QuantResult]


@dataclass(frozen=True)
class Variant:
    name: str
    config_type: type[VariantConfig]
    quantize: Handler


VARIANTS: Registry[Variant] = Registry("quantization variant")


def register_variant(name: str, config_type: type[VariantConfig]) -> Callable[[Handler], Handler]:
    """Decorator: register ``fn(model, calib, config) -> QuantResult`` as variant ``name``."""

    def decorate(fn: Handler) -> Handler:
        VARIANTS.register(name)(Variant(name, config_type, fn))
        return fn

    return decorate


def parse_variant(name: str, raw: Mapping[str, Any] | None) -> tuple[Variant, VariantConfig]:
    """Look up the handler of ``quantize.variants.<name>`` and validate its keys.

    Raises ParamsError naming ``quantize.variants.<name>.<key>`` for a bad key or value.
    """
    key = f"quantize.variants.{name}"
    raw = dict(raw or {})
    method = raw.get("method") or name
    if not isinstance(method, str) or method not in VARIANTS:
        known = ", ".join(VARIANTS.names())
        raise ParamsError(
            f"{key}: no registered quantization method {method!r} (registered: {known}); "
            f"name the entry after one of them or set `method:` to one"
        )
    variant = VARIANTS.get(method)
    try:
        config = variant.config_type.model_validate(raw)
    except ValidationError as exc:
        raise invalid_params(exc, key=key, unknown_key=UNKNOWN_VARIANT_KEY) from None
    return variant, config


def quantize_variant(
    name: str,
    variants: Mapping[str, Mapping[str, Any]],
    model: nn.Module,
    calib: Iterable[torch.Tensor],
    _chain: tuple[str, ...] = (),
) -> QuantResult:
    """Run variant ``name`` of ``variants`` (params.quantize.variants) on a float ``model``.

    With ``start_from`` the named variant runs first and this one receives its
    model; ``calib`` must then be re-iterable (a list, a :class:`CalibrationSet`).
    """
    if name not in variants:
        raise ParamsError(
            f"quantize.variants.{name}: no such variant (params.yaml has: {', '.join(variants)})"
        )
    variant, config = parse_variant(name, variants[name])
    if config.start_from is not None:
        if config.start_from in (*_chain, name):
            chain = " -> ".join((*_chain, name, config.start_from))
            raise ParamsError(f"quantize.variants.{name}.start_from: variants form a cycle ({chain})")
        if config.start_from not in variants:
            raise ParamsError(
                f"quantize.variants.{name}.start_from = {config.start_from!r}: not a variant "
                f"(quantize.variants has: {', '.join(variants)})"
            )
        model = quantize_variant(config.start_from, variants, model, calib, (*_chain, name)).model
    return variant.quantize(model, calib, config)


class CalibrationSet:
    """Re-iterable calibration batches from one boundary of a calibration dump.

    Yields float32 tensors in the layout dumped (``(1, 3, H, W)`` for the
    UNet input); each pass re-reads the dump's archive, so memory stays flat.
    """

    def __init__(self, root: str | Path, boundary: str, limit: int | None = None):
        self.root, self.boundary, self.limit = Path(root), boundary, limit
        count = int(read_manifest(self.root, boundary)["count"])
        self._len = count if limit is None else min(count, limit)
        if self._len == 0:
            raise GreenpipeError(
                f"{self.root / boundary}: no calibration samples; rerun `dvc repro calib_dump`"
            )

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[torch.Tensor]:
        for array in iter_boundary(self.root, self.boundary, self.limit):
            yield torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
