"""Calibration dumps: the tensors at every pipeline boundary, on disk.

Layout (written by ``tasks.calib_dump``, read by every quantizer)::

    <root>/index.json                    # {"boundaries": [names in pipeline order]}
    <root>/<boundary>/manifest.json      # see BoundaryManifest
    <root>/<boundary>/<k:06d>.npy        # one array per calibration sample

A boundary is a place where a pipeline is cut: the input of a model (UNet),
or the input of each kernel between temporal shifts (TSM).  Arrays keep the
layout the model sees there, e.g. ``(1, 3, H, W)`` float32 for the UNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from greenpipe.errors import DataError
from greenpipe.io import read_json, write_json


class BoundaryWriter:
    """Accumulates one boundary's arrays and running statistics."""

    def __init__(self, root: Path, name: str):
        self.dir = Path(root) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.count = 0
        self.sources: list[str] = []
        self.shape: tuple | None = None
        self.dtype: str | None = None
        self._min, self._max, self._sum, self._sumsq, self._n = np.inf, -np.inf, 0.0, 0.0, 0

    def add(self, array: np.ndarray, source: str) -> None:
        array = np.ascontiguousarray(array)
        np.save(self.dir / f"{self.count:06d}.npy", array)
        self.count += 1
        self.sources.append(source)
        self.shape = list(array.shape) if self.shape is None or list(array.shape) == self.shape else "varies"
        self.dtype = str(array.dtype)
        a = array.astype(np.float64)
        self._min, self._max = min(self._min, float(a.min())), max(self._max, float(a.max()))
        self._sum += float(a.sum())
        self._sumsq += float((a * a).sum())
        self._n += a.size

    def close(self) -> dict:
        mean = self._sum / max(self._n, 1)
        manifest = {
            "boundary": self.name,
            "shape": self.shape,
            "dtype": self.dtype,
            "count": self.count,
            "min": self._min,
            "max": self._max,
            "mean": mean,
            "std": float(np.sqrt(max(self._sumsq / max(self._n, 1) - mean * mean, 0.0))),
            "files": [f"{k:06d}.npy" for k in range(self.count)],
            "sources": self.sources,
        }
        write_json(self.dir / "manifest.json", manifest)
        return manifest


def write_index(root: str | Path, boundaries: list[str]) -> None:
    write_json(Path(root) / "index.json", {"boundaries": boundaries})


def boundaries(root: str | Path) -> list[str]:
    index = Path(root) / "index.json"
    if not index.exists():
        raise DataError(f"{index}: missing; run the calib_dump stage first (dvc repro calib_dump)")
    return list(read_json(index)["boundaries"])


def read_manifest(root: str | Path, boundary: str) -> dict:
    path = Path(root) / boundary / "manifest.json"
    if not path.exists():
        raise DataError(f"{path}: missing; boundary {boundary!r} was not dumped (known: {boundaries(root)})")
    return read_json(path)


def iter_boundary(root: str | Path, boundary: str, limit: int | None = None) -> Iterator[np.ndarray]:
    """Yield the arrays dumped at ``boundary`` in dump order."""
    manifest = read_manifest(root, boundary)
    for name in manifest["files"][:limit]:
        yield np.load(Path(root) / boundary / name)
