"""Learned Kernel Activation Maps (LKAM) and static kernel pruning, for any model that declares its units.

A model offers pruning by listing :class:`Unit`\\ s: a ``conv -> BatchNorm -> ReLU`` block whose
output kernels may go, and every convolution that reads that output (their input channels go
with them). Nothing here knows a particular model.

1. :func:`attach_gates` puts an LKAM gate on each unit: a 1x1 convolution of the block's input,
   global average pooling and a sigmoid give one factor per output kernel and per input, which
   multiplies the block's output, ``(N, C_out, 1, 1)``. :func:`sparsity` is the term added to the
   training loss (the mean gate) that pushes unneeded kernels towards zero.
2. :func:`utilisation` is each kernel's mean gate over a set of batches (the data's).
3. :func:`prune` removes, for good, the kernels whose utilisation is below a threshold, scales
   the kept ones by their utilisation (folded into the BatchNorm scale and shift: ReLU(z) u =
   ReLU(u z) for u >= 0) and narrows the consumers; the gates are removed. The result is the
   static-gated net (every input gated by the mean utilisation) without the removed kernels: where
   the removed kernels' utilisation is exactly zero it is that net exactly.

Dynamic, per-input gating is not kept: an exported ONNX graph is static.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Unit:
    """A prunable block (``block[0]`` a Conv2d, ``block[1]`` its BatchNorm2d) and the convs reading its output."""

    name: str
    block: nn.Sequential
    consumers: tuple[nn.Conv2d, ...]

    @property
    def kernels(self) -> int:
        return self.block[0].out_channels


class LKAM(nn.Module):
    """Per-kernel gate from the block's input: sigmoid(GAP(conv1x1(x))), (N, C_in, H, W) -> (N, C_out, 1, 1).

    Pooling before the 1x1 convolution gives the same result (both are linear) at a fraction of
    the cost. ``static``, once set, replaces the learned gate by fixed factors (C_out,).
    """

    def __init__(self, cin: int, cout: int, init_bias: float = 3.0):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, init_bias)  # start open (sigmoid(3) = 0.95): training closes gates
        self.static: torch.Tensor | None = None
        self.last: torch.Tensor | None = None  # the latest gates, (N, C_out): what sparsity() reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static is not None:
            return self.static.view(1, -1, 1, 1)
        g = torch.sigmoid(self.proj(x.mean((2, 3), keepdim=True)))  # (N, C_out, 1, 1)
        self.last = g.flatten(1)
        return g


def attach_gates(model: nn.Module, units: Sequence[Unit]) -> nn.ModuleList:
    """Gate every unit's output by its LKAM; the gates become ``model.lkam`` (trained with the model)."""
    gates = nn.ModuleList(LKAM(u.block[0].in_channels, u.kernels) for u in units)
    handles = []
    for unit, gate in zip(units, gates):
        handles.append(unit.block.register_forward_hook(lambda mod, inp, out, g=gate: out * g(inp[0])))
    model.lkam = gates
    model._lkam_handles = handles
    return gates


def sparsity(gates: Iterable[LKAM]) -> torch.Tensor:
    """The sparsity term: the mean gate over every gated kernel of the latest forward pass."""
    means = [g.last.mean() for g in gates if g.last is not None]
    if not means:
        raise ValueError("no gate has run: call the model on a batch before sparsity()")
    return torch.stack(means).mean()


@torch.no_grad()
def utilisation(model: nn.Module, gates: Sequence[LKAM], batches: Iterable[torch.Tensor]) -> list[np.ndarray]:
    """Each gated kernel's mean gate over every sample of ``batches``: one (C_out,) array per unit."""
    sums = [torch.zeros(g.proj.out_channels, dtype=torch.float64) for g in gates]
    count = 0
    for x in batches:
        model(x)
        for s, g in zip(sums, gates):
            s += g.last.double().sum(0)
        count += x.shape[0]
    if not count:
        raise ValueError("utilisation needs at least one batch")
    return [(s / count).numpy() for s in sums]


def detach_gates(model: nn.Module) -> None:
    for h in getattr(model, "_lkam_handles", []):
        h.remove()
    model._lkam_handles = []
    if hasattr(model, "lkam"):
        del model.lkam


def kernels_to_keep(u: np.ndarray, threshold: float, multiple: int = 1) -> np.ndarray:
    """Indices (ascending) of the kernels a unit keeps: those used at least ``threshold``, at least one.

    With ``multiple`` > 1 the count goes to the nearest multiple of it (halves up; at least one
    multiple, at most the unit's width): the most used kernels below the threshold come back, or the
    least used above it go too. CPU convolutions vectorise over 8 or 16 channels, and a width just
    past a multiple runs about as slowly as the next multiple (benchmarks/detect_prune.py).
    """
    u = np.asarray(u)
    n = max(1, int(np.count_nonzero(u >= threshold)))
    if multiple > 1:
        n = min(len(u), max(multiple, (n + multiple // 2) // multiple * multiple))
    order = np.argsort(-u, kind="stable")  # most used first; ties keep the lower index
    return np.sort(order[:n])


@torch.no_grad()
def prune(model: nn.Module, units: Sequence[Unit], util: Sequence[np.ndarray], threshold: float,
          multiple: int = 1) -> dict[str, list[int]]:
    """Remove kernels with utilisation below ``threshold``, fold the rest's into BN, narrow consumers.

    ``model`` loses its gates and is narrowed in place (its BatchNorms must be in eval mode for the
    fold to be exact, which this sets). At least one kernel per unit is kept (the most used), and
    with ``multiple`` each unit keeps the nearest multiple of that many (:func:`kernels_to_keep`).
    Returns the kept kernel indices per unit name.
    """
    detach_gates(model)
    model.eval()
    kept = {}
    for unit, u in zip(units, util):
        keep = kernels_to_keep(u, threshold, multiple)
        bn = _keep_kernels(unit, keep)
        scale = torch.from_numpy(np.asarray(u, np.float32)[keep])
        bn.weight = nn.Parameter(bn.weight * scale)
        bn.bias = nn.Parameter(bn.bias * scale)
        kept[unit.name] = keep.tolist()
    return kept


@torch.no_grad()
def narrow(units: Sequence[Unit], kept: dict[str, Sequence[int]]) -> None:
    """Give a freshly built model the widths a pruned one has (``kept``: what :func:`prune` returned).

    Its weights are those of the kernels kept, unscaled; loading the pruned model's state dict then
    restores it exactly. A checkpoint of a pruned model stores ``kept`` so that it rebuilds itself.
    """
    unknown = sorted(set(kept) - {u.name for u in units})
    if unknown:
        raise ValueError(f"kept kernels for units {unknown}, which this model does not have")
    for unit in units:
        if unit.name in kept:
            _keep_kernels(unit, np.asarray(kept[unit.name], np.int64))


def _keep_kernels(unit: Unit, keep: np.ndarray) -> nn.BatchNorm2d:
    """Keep only output kernels ``keep`` of ``unit``'s conv and BN, and those input channels of its consumers."""
    conv, bn = unit.block[0], unit.block[1]
    idx = torch.from_numpy(keep)
    # in place: another unit may list this conv as a consumer, before or after this one
    conv.weight = nn.Parameter(conv.weight[idx].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias[idx].clone())
    conv.out_channels = len(keep)
    bn.weight = nn.Parameter(bn.weight[idx].clone())
    bn.bias = nn.Parameter(bn.bias[idx].clone())
    bn.running_mean = bn.running_mean[idx].clone()
    bn.running_var = bn.running_var[idx].clone()
    bn.num_features = len(keep)
    for consumer in unit.consumers:
        _narrow_in_place(consumer, idx)
    return bn


def _narrow_in_place(conv: nn.Conv2d, in_idx: torch.Tensor) -> None:
    """Keep only input channels ``in_idx`` of an ungrouped conv (it may be another unit's conv, so in place)."""
    if conv.groups != 1:
        raise ValueError(f"{conv}: a grouped convolution cannot lose input channels alone; do not list it "
                         "as a consumer of a prunable unit")
    conv.weight = nn.Parameter(conv.weight[:, in_idx].clone())
    conv.in_channels = len(in_idx)


def macs_and_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of every Conv2d on ``example`` (counted from hooks) and the parameter count."""
    macs = 0

    def count(mod: nn.Conv2d, inp, out) -> None:
        nonlocal macs
        k = mod.weight[0].numel()  # C_in / groups * kh * kw
        macs += out.numel() // out.shape[0] * k

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return macs, sum(p.numel() for p in model.parameters())
