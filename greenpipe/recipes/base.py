"""What a recipe tells the shared stages.

Everything that is not specific to one system (validation, calibration
dumps, quantization, compile, deploy, eval, soak, report) is shared; a recipe
only says how to build and load its model, where its pipeline boundaries are,
how to pre/post-process, and how to score outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import numpy as np

from greenpipe.registry import Registry

if TYPE_CHECKING:  # torch only where a model is built: device hosts evaluate artifacts without it
    from torch import nn


class Recipe(Protocol):
    name: str

    def build_model(self, model_args: dict[str, Any]) -> nn.Module:
        """A fresh float model from the ``model_args`` a checkpoint stores."""

    def boundaries(self, model: nn.Module) -> dict[str, nn.Module | None]:
        """Pipeline boundaries: name -> module whose *input* is dumped (None = the model input)."""

    def calibration_inputs(
        self, data_root: Path, count: int, crop: int, rng: np.random.Generator
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(source description, model input) pairs drawn from the train split."""

    def to_input(self, sample: np.ndarray) -> np.ndarray:
        """Pre-process one sample into the model's input layout, e.g. (1, C, H, W) float32."""

    def multiple(self, model_args: dict[str, Any]) -> int:
        """Input H and W must be multiples of this (the runtime pads)."""

    def evaluate(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        data_root: Path,
        max_side: int = 0,
        multiple: int = 8,
        outputs: dict[str, np.ndarray] | None = None,
    ) -> dict:
        """Score ``run`` (input batch -> output batch, numpy) on the val split.

        When ``outputs`` is a dict, each output is stored in it by sample name.
        """


RECIPES: Registry[Recipe] = Registry("recipe")


def get_recipe(name: str) -> Recipe:
    return RECIPES.get(name)


def load_checkpoint(path: str | Path) -> dict:
    """A self-describing checkpoint: recipe, model_args, state_dict, data fingerprint."""
    import torch

    from greenpipe.errors import GreenpipeError

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GreenpipeError(f"{path}: no checkpoint; run the train stage first (dvc repro train)") from None
    for key in ("recipe", "model_args", "state_dict"):
        if key not in ckpt:
            raise GreenpipeError(f"{path}: not a greenpipe checkpoint (no {key!r}); retrain with `dvc repro train`")
    return ckpt


def model_from_checkpoint(path: str | Path) -> "tuple[nn.Module, dict]":
    """Rebuild the float model a checkpoint describes, in eval mode."""
    ckpt = load_checkpoint(path)
    model = get_recipe(ckpt["recipe"]).build_model(ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
