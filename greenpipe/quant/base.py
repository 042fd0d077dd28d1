"""Variants that take one PyTorch model: what they return and how the quantize stage runs them.

Such a variant is registered with ``takes="model"`` (:mod:`greenpipe.quant.registry`)
and quantizes a float model with calibration batches read at one boundary::

    @register_variant("ptq8", Ptq8Config, takes="model")
    def quantize(model, calib, config) -> QuantResult: ...

Its entry lives under ``quantize.variants``.  ``start_from: <other key>`` chains
variants: the other variant runs first and this one starts from its model
(QAT from a PTQ model, say); see :func:`quantize_variant`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from greenpipe.calib import check_finite, iter_boundary, read_manifest
from greenpipe.errors import GreenpipeError, ParamsError
from greenpipe.quant.registry import parse_variant


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


def quantize_variant(
    name: str,
    variants: Mapping[str, Mapping[str, Any]],
    model: nn.Module,
    calib: Iterable[torch.Tensor],
    _chain: tuple[str, ...] = (),
    key_prefix: str = "quantize.variants",
) -> QuantResult:
    """Run variant ``name`` of ``variants`` (the table at ``key_prefix`` in params.yaml) on a float ``model``.

    With ``start_from`` the named variant runs first and this one receives its
    model; ``calib`` must then be re-iterable (a list, a :class:`CalibrationSet`).
    """
    if name not in variants:
        raise ParamsError(
            f"{key_prefix}.{name}: no such variant (params.yaml has: {', '.join(variants)})"
        )
    variant, config = parse_variant(name, variants[name], key_prefix)
    if config.start_from is not None:
        if config.start_from in (*_chain, name):
            chain = " -> ".join((*_chain, name, config.start_from))
            raise ParamsError(f"{key_prefix}.{name}.start_from: variants form a cycle ({chain})")
        if config.start_from not in variants:
            raise ParamsError(
                f"{key_prefix}.{name}.start_from = {config.start_from!r}: not a variant "
                f"({key_prefix} has: {', '.join(variants)})"
            )
        model = quantize_variant(config.start_from, variants, model, calib, (*_chain, name), key_prefix).model
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
        check_finite(self.root, boundary, limit)  # before any quantizer sees a range

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[torch.Tensor]:
        for array in iter_boundary(self.root, self.boundary, self.limit):
            yield torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
