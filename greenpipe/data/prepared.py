"""The prepared dataset every recipe-agnostic stage after ``ingest`` reads.

Layout (written by ``tasks.ingest``)::

    <root>/manifest.json            # layout, sources, split, noise params, per-sample rows
    <root>/{train,val}/clean/<name>.png
    <root>/{train,val}/noisy/<name>.png

``name`` is unique across splits; ``group`` (in the manifest) is the source
image or scene a sample came from, and a group never spans both splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenpipe.errors import DataError
from greenpipe.io import read_image, read_json

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Pair:
    name: str
    split: str
    group: str
    clean: Path
    noisy: Path

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(clean, noisy) float32 (H, W, 3) in [0, 1]."""
        return read_image(self.clean), read_image(self.noisy)


def load_split(root: str | Path, split: str) -> list[Pair]:
    """Pairs of one split, in manifest order."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise DataError(f"{manifest_path}: missing; run the ingest stage first (dvc repro ingest)")
    manifest = read_json(manifest_path)
    pairs = [
        Pair(
            name=row["name"],
            split=row["split"],
            group=row["group"],
            clean=root / row["split"] / "clean" / f"{row['name']}.png",
            noisy=root / row["split"] / "noisy" / f"{row['name']}.png",
        )
        for row in manifest["samples"]
        if row["split"] == split
    ]
    if not pairs:
        raise DataError(f"{manifest_path}: no samples in split {split!r}; check ingest.val_fraction / val_sources")
    return pairs


def center_crop(img: np.ndarray, max_side: int) -> np.ndarray:
    """Centre crop (H, W, C) so neither side exceeds ``max_side`` (0 = no crop)."""
    if max_side <= 0:
        return img
    h, w = img.shape[:2]
    th, tw = min(h, max_side), min(w, max_side)
    top, left = (h - th) // 2, (w - tw) // 2
    return img[top : top + th, left : left + tw]
