"""Calibration dumps: the tensors at every pipeline boundary, on disk.

Layout (written by :func:`dump_calibration` for the ``calib_dump`` and
``video_calib`` stages, read by every quantizer)::

    <root>/index.json                    # {"boundaries": [names in pipeline order]}
    <root>/<file>.json                   # whatever else the recipe's dump needs (TSM: split.json)
    <root>/<boundary>/manifest.json      # name, shape, dtype, count, min/max/mean/std, entries, sources
    <root>/<boundary>/arrays.npz         # one ``.npy`` entry per calibration sample, ``<k:06d>.npy``

``arrays.npz`` is an uncompressed zip of ``.npy`` files (``numpy.load`` opens
it; each sample is read on its own), written one sample at a time so a dump
never holds all its arrays in memory.  One file per boundary instead of one
per sample keeps the DVC walk of a dump cheap (a TSM dump has thousands of
samples).

A boundary is a place where a pipeline is cut: the input of a model (UNet),
or the input of each kernel between temporal shifts (TSM).  Arrays keep the
layout the model sees there, e.g. ``(1, 3, H, W)`` float32 for the UNet.
A recipe says what to dump (``Recipe.calibration_samples`` returns a
:class:`CalibrationSamples`); how it is written is the same for every recipe.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from greenpipe.errors import DataError
from greenpipe.io import read_json, replacing_dir, write_json

ARCHIVE = "arrays.npz"


class BoundaryWriter:
    """Accumulates one boundary's arrays and running statistics."""

    def __init__(self, root: Path, name: str):
        self.dir = Path(root) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(self.dir / ARCHIVE, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.name = name
        self.count = 0
        self.sources: list[str] = []
        self.shape: tuple | None = None
        self.dtype: str | None = None
        self._min, self._max, self._sum, self._sumsq, self._n = np.inf, -np.inf, 0.0, 0.0, 0

    def add(self, array: np.ndarray, source: str) -> None:
        array = np.ascontiguousarray(array)
        with self._zip.open(f"{self.count:06d}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, array, allow_pickle=False)
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
        self._zip.close()
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
            "archive": ARCHIVE,
            "entries": [f"{k:06d}" for k in range(self.count)],
            "sources": self.sources,
        }
        write_json(self.dir / "manifest.json", manifest)
        return manifest


def write_index(root: str | Path, boundaries: list[str]) -> None:
    write_json(Path(root) / "index.json", {"boundaries": boundaries})


@dataclass
class CalibrationSamples:
    """What a recipe's calibration dump holds, drawn lazily: one sample at a time reaches the disk.

    ``samples`` yields ``(source, {boundary: array})``, one array per boundary
    per sample, the source saying where the sample came from (an image crop, a
    clip's frame).  ``facts`` are the stage's metrics besides the per-boundary
    statistics (sample and kernel counts); ``stats`` the manifest keys those
    statistics repeat.
    """

    boundaries: list[str]  # pipeline order: index.json
    samples: Iterable[tuple[str, dict[str, np.ndarray]]]
    files: dict[str, Any] = field(default_factory=dict)  # JSON files beside index.json, by file name
    facts: dict[str, Any] = field(default_factory=dict)
    stats: tuple[str, ...] = ("shape", "dtype", "count", "min", "max", "mean", "std")


def dump_calibration(calibration: CalibrationSamples, out: str | Path) -> dict[str, dict]:
    """Write ``calibration`` under ``out`` (replacing it whole, or not at all); return its manifests."""
    with replacing_dir(out) as tmp:
        writers = {name: BoundaryWriter(tmp, name) for name in calibration.boundaries}
        for source, arrays in calibration.samples:
            if arrays.keys() != writers.keys():
                raise ValueError(f"calibration sample {source}: boundaries {sorted(arrays)}, "
                                 f"expected {sorted(writers)}")
            for name, array in arrays.items():
                writers[name].add(array, source)
        manifests = {name: w.close() for name, w in writers.items()}
        write_index(tmp, list(calibration.boundaries))
        for name, content in calibration.files.items():
            write_json(tmp / name, content)
    return manifests


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


def open_boundary(root: str | Path, boundary: str) -> tuple[list[str], np.lib.npyio.NpzFile]:
    """The sample names (dump order) of ``boundary`` and its opened archive; close it when done."""
    manifest = read_manifest(root, boundary)
    path = Path(root) / boundary / manifest.get("archive", ARCHIVE)
    if "entries" not in manifest or not path.exists():
        raise DataError(f"{path}: missing or {path.parent / 'manifest.json'} has no 'entries' (a dump in an "
                        "older format); rerun the stage that wrote it (dvc repro calib_dump / video_calib)")
    return list(manifest["entries"]), np.load(path, allow_pickle=False)


def iter_boundary(root: str | Path, boundary: str, limit: int | None = None) -> Iterator[np.ndarray]:
    """Yield the arrays dumped at ``boundary`` in dump order, one at a time."""
    entries, archive = open_boundary(root, boundary)
    with archive:
        for name in entries[:limit]:
            yield archive[name]


def check_finite(root: str | Path, boundary: str, limit: int | None = None) -> None:
    """Raise DataError when a dumped array at ``boundary`` holds NaN or Inf, naming each one.

    Quantizers calibrate ranges from these arrays; a single NaN turns a range
    into NaN and surfaces later as an unrelated quantizer error.  Reads one
    sample at a time; ``limit`` as in :func:`iter_boundary`.
    """
    sources = read_manifest(root, boundary).get("sources", [])
    entries, archive = open_boundary(root, boundary)
    bad = []
    with archive:
        for k, name in enumerate(entries[:limit]):
            array = archive[name]
            if not np.issubdtype(array.dtype, np.floating):
                continue  # integers cannot be non-finite
            nan, inf = int(np.count_nonzero(np.isnan(array))), int(np.count_nonzero(np.isinf(array)))
            if nan or inf:
                source = f", sample {sources[k]}" if k < len(sources) else ""
                bad.append(f"{name}.npy{source}: {nan} NaN and {inf} Inf of {array.size} values")
    if bad:
        shown = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(
            f"{Path(root) / boundary / ARCHIVE}: {len(bad)} of {len(entries[:limit])} arrays at boundary "
            f"{boundary!r} hold non-finite values:\n  {shown}\nA quantizer cannot calibrate on them; find what "
            "produced them (a diverged checkpoint, a corrupt input) and rerun the dump "
            "(dvc repro calib_dump / video_calib)"
        )
