"""Readers for the raw dataset layouts ``ingest`` accepts (dvc.yaml: ``--raw data``).

==========  ================================================================
layout      what the folder looks like
==========  ================================================================
sidd        ``Data/<scene>/GT_SRGB_<k>.PNG`` + ``NOISY_SRGB_<k>.PNG`` (SIDD
            Medium sRGB); the scene folders may also sit directly in root
paired      ``clean/`` and ``noisy/`` holding images with the same names
clean       ``clean/``, or the folder itself, holding clean images only;
            ingest synthesises the noise (greenpipe.data.noise)
builtin     ``clean/`` plus ``SOURCES.json`` (``greenpipe data builtin``);
            read like ``clean``
==========  ================================================================

:func:`detect_layout` tells them apart, :func:`read_samples` lists the
samples (sorted by name) and :func:`load_rgb` decodes one image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenpipe.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

LAYOUTS: dict[str, str] = {
    "sidd": "Data/<scene>/GT_SRGB_*.PNG with NOISY_SRGB_*.PNG beside it (SIDD Medium sRGB); "
    "the <scene> folders may also sit directly in the folder",
    "paired": "clean/ and noisy/ holding images with the same file names",
    "clean": "clean/ (or the folder itself) holding clean images only; noise is synthesised",
    "builtin": "clean/ plus SOURCES.json, as written by `greenpipe data builtin`",
}

# SIDD scene folders are named <instance>_<scene>_<phone>_<ISO>_<shutter>_<temp>_<brightness>;
# the same <scene> is shot many times (other phones, ISO, light), so the scene
# number, not the folder, is the unit that must not span train and val.
_SIDD_SCENE = re.compile(r"^\d{4}_(\d{3})_")
_SIDD_FILE = re.compile(r"^(GT|NOISY)_SRGB_(\w+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One raw sample: ``noisy`` is None when ingest must synthesise the noise."""

    name: str
    group: str
    clean: Path
    noisy: Path | None = None


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _sidd_scenes(root: Path) -> list[Path]:
    base = root / "Data" if (root / "Data").is_dir() else root
    scenes = [d for d in sorted(base.iterdir()) if d.is_dir()] if base.is_dir() else []
    return [d for d in scenes if any(_SIDD_FILE.match(p.stem) for p in _images(d))]


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder; put a dataset there (`greenpipe data use PATH`) "
            "or the built-in sample (`greenpipe data builtin`)"
        )


def detect_layout(root: str | Path) -> str:
    """Which layout ``root`` holds: "sidd", "paired", "clean" or "builtin"."""
    root = Path(root)
    _check_root(root)
    clean = root / "clean"
    if clean.is_dir() and (root / "SOURCES.json").is_file():
        return "builtin"
    if clean.is_dir() and (root / "noisy").is_dir():
        return "paired"
    if _sidd_scenes(root):
        return "sidd"
    if _images(clean) or _images(root):
        return "clean"
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    shown = ", ".join(found[:8]) + (f", ... ({len(found)} entries)" if len(found) > 8 else "") or "nothing"
    expected = "\n".join(f"  {name:8s} {text}" for name, text in LAYOUTS.items())
    raise DataError(
        f"{root}: cannot tell the dataset layout (found: {shown}). Expected one of:\n{expected}\n"
        "Arrange the folder like one of these, or set ingest.layout in params.yaml."
    )


def _by_stem(paths: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        if p.stem in out:
            raise DataError(f"{folder}: {out[p.stem].name} and {p.name} share the name {p.stem!r}; keep one")
        out[p.stem] = p
    return out


def _read_sidd(root: Path) -> list[Sample]:
    samples, problems = [], []
    for scene in _sidd_scenes(root):
        files: dict[tuple[str, str], Path] = {}
        for p in _images(scene):
            m = _SIDD_FILE.match(p.stem)
            if m:
                files[(m.group(1).upper(), m.group(2))] = p
        m = _SIDD_SCENE.match(scene.name)
        group = f"scene{m.group(1)}" if m else scene.name
        for kind, key in sorted(files):
            other = "NOISY" if kind == "GT" else "GT"
            if (other, key) not in files:
                problems.append(f"{files[(kind, key)]}: no {other}_SRGB_{key} beside it")
            elif kind == "GT":
                samples.append(
                    Sample(f"{scene.name}_{key}", group, files[("GT", key)], files[("NOISY", key)])
                )
    if problems:
        raise DataError(
            f"{root}: {len(problems)} SIDD file(s) without their pair:\n  "
            + "\n  ".join(problems)
            + "\nCopy the missing files or delete the unpaired ones."
        )
    return samples


def _read_paired(root: Path) -> list[Sample]:
    clean = _by_stem(_images(root / "clean"), root / "clean")
    noisy = _by_stem(_images(root / "noisy"), root / "noisy")
    unmatched = [f"clean/{clean[s].name}: no noisy/{s}.*" for s in sorted(set(clean) - set(noisy))]
    unmatched += [
        f"noisy/{noisy[s].name}: no clean/{s}.* (missing ground truth)"
        for s in sorted(set(noisy) - set(clean))
    ]
    if unmatched:
        raise DataError(
            f"{root}: {len(unmatched)} image(s) without their pair:\n  "
            + "\n  ".join(unmatched)
            + "\nEvery clean/<name> needs a noisy/<name> and vice versa."
        )
    return [Sample(s, s, clean[s], noisy[s]) for s in sorted(clean)]


def _read_clean(root: Path) -> list[Sample]:
    folder = root / "clean" if (root / "clean").is_dir() else root
    return [Sample(s, s, p) for s, p in sorted(_by_stem(_images(folder), folder).items())]


def read_samples(root: str | Path, layout: str) -> list[Sample]:
    """The samples under ``root`` read as ``layout``, sorted by name (never empty)."""
    root = Path(root)
    _check_root(root)
    readers = {"sidd": _read_sidd, "paired": _read_paired, "clean": _read_clean, "builtin": _read_clean}
    if layout not in readers:
        raise DataError(f"layout {layout!r} is unknown; expected one of {', '.join(readers)}")
    samples = sorted(readers[layout](root), key=lambda s: s.name)
    if not samples:
        raise DataError(f"{root}: no images found for layout {layout!r} ({LAYOUTS[layout]})")
    return samples


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to float32 (H, W, 3) sRGB in [0, 1] (8- or 16-bit, grey or colour).

    EXIF orientation is applied, so a phone photo is upright.  A file that
    does not decode raises DataError naming it.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey: PIL's convert("RGB") would clip it to 8 bits.
                grey = np.asarray(im, dtype=np.float32) / 65535.0
                return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode the image ({exc}); replace or delete the file") from None
