"""Tiny on-disk datasets and params for the data / ingest / validate tests."""

from __future__ import annotations

import copy
import struct
import zlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from greenpipe.params import Params, parse_params

ROOT = Path(__file__).resolve().parents[2]


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A natural-looking-enough uint8 (H, W, 3) image: a random low-frequency colour field."""
    coarse = (rng.random((max(2, height // 8), max(2, width // 8), 3)) * 200 + 28).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def write_images(
    folder: Path, names: list[str], height: int = 80, width: int = 72, seed: int = 0
) -> list[Path]:
    """Write one PNG per name into ``folder``; return the paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        Image.fromarray(smooth_image(rng, height, width)).save(path)
        paths.append(path)
    return paths


def params_dict(**sections: dict) -> dict:
    """The repository's params.yaml as a dict, ``sections`` merged over it (one level deep)."""
    raw = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def make_params(**sections: dict) -> Params:
    """Validated :func:`params_dict`."""
    return parse_params(params_dict(**sections), "test params")


def write_params(path: Path, **sections: dict) -> Path:
    """:func:`params_dict` written as a params.yaml for a stage's ``--params``."""
    path.write_text(yaml.safe_dump(params_dict(**sections), sort_keys=False))
    return path


def write_png16_rgb(path: Path, pixels: np.ndarray) -> None:
    """Write uint16 (H, W, 3) as a 16-bit RGB PNG (PIL cannot write one)."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
