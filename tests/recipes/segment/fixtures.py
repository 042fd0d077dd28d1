"""Tiny segment datasets on disk (real PNG files) and params for the segment recipe's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greenpipe.params import Params
from greenpipe.recipes.segment.data import write_label
from tests.data.fixtures import make_params, smooth_image
from tests.workspace import TINY_PARAMS_OVERRIDES

TINY_SEGMENT = TINY_PARAMS_OVERRIDES["segment"]


def segment_params(**segment: dict) -> Params:
    """The repository's params with the tiny segment section, ``segment`` merged over it (per subsection)."""
    section = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY_SEGMENT.items()}
    for key, value in segment.items():
        section[key] = {**section.get(key, {}), **value} if isinstance(value, dict) else value
    return make_params(segment=section)


def write_cityscapes(root: Path, split: str, city: str, stem: str, label_ids: np.ndarray) -> tuple[Path, Path]:
    """One Cityscapes-layout sample: an RGB image and its ``*_gtFine_labelIds.png`` of the same size."""
    from PIL import Image

    h, w = label_ids.shape
    image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
    label = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_image(np.random.default_rng(len(stem)), h, w)).save(image)
    write_label(label, label_ids.astype(np.uint8))
    return image, label
