"""Per-file table of a prepared dataset: what :mod:`greenpipe.recipes.denoise.validate` checks.

:func:`build_table` returns one pandas row per image file, covering both the
files ``manifest.json`` lists (present or not) and the files found on disk
under ``{train,val}/{clean,noisy}/`` (listed or not).  A file that does not
decode becomes a row with ``decode_error`` set, never an exception.

Columns (units in brackets; empty / NaN where a value does not apply):

=============  =================================================================
file           path relative to the dataset root, e.g. ``train/noisy/a_n0.png``
split, role    ``train``/``val``, ``clean``/``noisy``
name, group    sample name (file stem) and its manifest group ("" if unlisted)
in_manifest    the file is one manifest.json lists
exists         the file is on disk
decode_error   "" when the file reads and decodes, else why not
height, width  [px]; ``min_side`` = min of the two
channels       from the PNG header (palette counts as 3), else the decoded array
bit_depth      bits per sample, from the PNG header, else the decoded dtype
dtype          numpy dtype of the decoded pixels
min, max       pixel extremes in the decoded dtype's units (0-255 for 8-bit)
sha256         of the file's bytes; ``pixel_sha256`` of its decoded pixels
partner        the other file of the pair (``train/clean/a_n0.png`` ...)
has_partner    the partner exists on disk
pair_match     clean and noisy have the same height and width
partner_size   the partner's ``WxH`` [px]
noisy_psnr     [dB] noisy vs its clean, noisy rows only (inf when identical)
noise_sigma    [0-1 units] skimage.restoration.estimate_sigma, noisy rows only
leak           val clean rows: 1 when a train clean image has the same pixels
leak_with      that train clean file
=============  =================================================================
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd

from greenpipe.data.prepared import SPLITS
from greenpipe.errors import DataError
from greenpipe.io import read_json
from greenpipe.recipes.denoise.metrics import psnr

ROLES = ("clean", "noisy")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels; a palette image (3) decodes to RGB.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
MISSING = "missing: listed in manifest.json but not on disk"


def _png_header(data: bytes) -> tuple[int, int | None] | None:
    """(bit depth, channels) from a PNG's IHDR chunk; None when ``data`` is not a PNG."""
    if data[:8] != PNG_SIGNATURE or len(data) < 26 or data[12:16] != b"IHDR":
        return None
    return data[24], _PNG_CHANNELS.get(data[25])


def inspect_file(path: Path) -> tuple[dict, np.ndarray | None]:
    """Facts about one image file and its decoded pixels (None when it does not decode)."""
    from PIL import Image

    info: dict = {"exists": path.is_file(), "decode_error": ""}
    if not info["exists"]:
        info["decode_error"] = MISSING
        return info, None
    data = path.read_bytes()
    info["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(BytesIO(data)) as im:
            im.load()  # headers parse lazily; a truncated body only fails here
            pixels = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file to report, not a crash
        info["decode_error"] = f"does not decode ({type(exc).__name__}: {exc})"
        return info, None
    header = _png_header(data)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if header is not None and header[1] is not None:
        channels = header[1]
    info.update(
        height=pixels.shape[0],
        width=pixels.shape[1],
        min_side=min(pixels.shape[:2]),
        channels=channels,
        bit_depth=header[0] if header is not None else pixels.dtype.itemsize * 8,
        dtype=str(pixels.dtype),
        min=float(pixels.min()),
        max=float(pixels.max()),
        pixel_sha256=hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode() + pixels.tobytes()).hexdigest(),
    )
    return info, pixels


def _unit(pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels as float64 in [0, 1]."""
    if np.issubdtype(pixels.dtype, np.integer):
        return pixels.astype(np.float64) / np.iinfo(pixels.dtype).max
    return pixels.astype(np.float64)


def _noise_sigma(noisy: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    img = _unit(noisy)
    channel_axis = -1 if img.ndim == 3 else None
    return float(estimate_sigma(img, channel_axis=channel_axis, average_sigmas=True))


def _manifest_files(root: Path) -> dict[str, str]:
    """Relative path -> group for every file manifest.json lists."""
    path = root / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the ingest stage first (dvc repro ingest)")
    try:
        samples = read_json(path)["samples"]
        return {
            f"{row['split']}/{role}/{row['name']}.png": str(row.get("group", ""))
            for row in samples
            for role in ROLES
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not a greenpipe manifest ({type(exc).__name__}: {exc}); rerun ingest"
        ) from None


def build_table(root: str | Path) -> pd.DataFrame:
    """One row per image file of the prepared dataset at ``root`` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; run the ingest stage first (dvc repro ingest)")
    listed = _manifest_files(root)
    on_disk = {
        p.relative_to(root).as_posix()
        for split in SPLITS
        for role in ROLES
        if (root / split / role).is_dir()
        for p in (root / split / role).iterdir()
        if p.is_file()
    }
    rows: dict[str, dict] = {}
    for file in sorted(set(listed) | on_disk):
        split, role, base = file.split("/", 2)
        rows[file] = {
            "file": file, "split": split, "role": role, "name": Path(base).stem,
            "group": listed.get(file, ""), "in_manifest": file in listed,
        }  # fmt: skip

    # Pairs are read together, one at a time, so memory holds two images at most.
    # A stray file sharing a listed file's stem (a.jpg beside a.png) is
    # inspected on its own and paired with nothing.
    by_key: dict[tuple[str, str], dict[str, str]] = {}
    strays: list[str] = []
    for file, row in sorted(rows.items(), key=lambda kv: not kv[1]["in_manifest"]):
        roles = by_key.setdefault((row["split"], row["name"]), {})
        if row["role"] in roles:
            strays.append(file)
        else:
            roles[row["role"]] = file
    for file in strays:
        rows[file].update(inspect_file(root / file)[0], has_partner=False, partner="")
    clean_hash: dict[str, dict[str, str]] = {split: {} for split in SPLITS}
    for (split, name), files in sorted(by_key.items()):
        pixels = {}
        for role, file in files.items():
            info, pixels[role] = inspect_file(root / file)
            rows[file].update(info)
        for role, file in files.items():
            other = "noisy" if role == "clean" else "clean"
            partner = files.get(other, f"{split}/{other}/{name}.png")
            prow = rows.get(partner, {})
            row = rows[file]
            row.update(partner=partner, has_partner=bool(prow.get("exists", False)))
            if "height" in row and "height" in prow:
                row["pair_match"] = (row["height"], row["width"]) == (prow["height"], prow["width"])
                row["partner_size"] = f"{prow['width']}x{prow['height']}"
        noisy, clean = pixels.get("noisy"), pixels.get("clean")
        if noisy is not None:
            noisy_row = rows[files["noisy"]]
            noisy_row["noise_sigma"] = _noise_sigma(noisy)
            if clean is not None and clean.shape == noisy.shape:
                noisy_row["noisy_psnr"] = psnr(_unit(clean), _unit(noisy))
        if clean is not None:
            clean_hash[split].setdefault(rows[files["clean"]]["pixel_sha256"], files["clean"])

    for file, row in rows.items():
        if row["split"] == "val" and row["role"] == "clean" and row.get("pixel_sha256"):
            twin = clean_hash["train"].get(row["pixel_sha256"])
            row["leak"], row["leak_with"] = (1, twin) if twin else (0, "")

    columns = [
        "file", "split", "role", "name", "group", "in_manifest", "exists", "decode_error",
        "height", "width", "min_side", "channels", "bit_depth", "dtype", "min", "max",
        "sha256", "pixel_sha256", "partner", "has_partner", "pair_match", "partner_size",
        "noisy_psnr", "noise_sigma", "leak", "leak_with",
    ]  # fmt: skip
    return pd.DataFrame([rows[f] for f in sorted(rows)], columns=columns).reset_index(drop=True)
