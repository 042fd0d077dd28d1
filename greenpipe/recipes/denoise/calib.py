"""Calibration samples of a PyTorch model: what each boundary is fed, captured by forward pre-hooks.

``Recipe.boundaries`` names the modules whose *input* is a boundary (None: the
model input).  The float model runs on every calibration input and a forward
pre-hook on each such module records what it sees, so the dump is exactly what
a per-kernel quantizer is fed.  Imports torch: the recipe imports this module
only when it dumps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from greenpipe.calib import CalibrationSamples
from greenpipe.errors import GreenpipeError
from greenpipe.recipes.base import Recipe, model_from_checkpoint


def calibration(recipe: Recipe, checkpoint: Path, inputs: Iterable[tuple[str, np.ndarray]], count: int,
                threads: int) -> CalibrationSamples:
    """The inputs of ``recipe.boundaries`` over ``inputs`` ((source, model input) pairs, ``count`` of them).

    The float model is the one ``checkpoint`` describes; torch runs on ``threads`` threads.
    """
    torch.set_num_threads(threads)
    model, ckpt = model_from_checkpoint(checkpoint)
    if ckpt["recipe"] != recipe.name:
        raise GreenpipeError(f"{checkpoint}: a checkpoint of recipe {ckpt['recipe']!r}, not {recipe.name!r}; "
                             f"give the stage that recipe's model (--model) or --recipe {ckpt['recipe']}")
    bounds = recipe.boundaries(model)
    return CalibrationSamples(boundaries=list(bounds), samples=_hooked(model, bounds, inputs),
                              facts={"samples": count})


def _hooked(model: nn.Module, bounds: dict[str, nn.Module | None],
            inputs: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(source, {boundary: array}) per input: the model input itself, or what a hooked module was fed."""
    captured: dict[str, np.ndarray] = {}

    def capture(name: str):
        return lambda _module, args: captured.__setitem__(name, args[0].detach().numpy().copy())

    handles = [m.register_forward_pre_hook(capture(n)) for n, m in bounds.items() if m is not None]
    try:
        for source, x in inputs:
            captured.clear()
            captured.update((n, x) for n, m in bounds.items() if m is None)
            with torch.no_grad():
                model(torch.from_numpy(x))
            yield source, dict(captured)
    finally:
        for h in handles:
            h.remove()
