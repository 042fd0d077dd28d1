"""Small file helpers shared by the stages: atomic writes and directory swaps, JSON metrics, images."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | Path, before_replace: Callable[[], None] | None = None) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through, so that a crash never leaves a half-written ``path``.

    The file is a hidden temporary one beside ``path`` (with no suffix of its
    own), renamed onto ``path`` when the block succeeds; ``before_replace``
    runs just before that rename (e.g. to move the file being replaced aside).
    When the block or the write fails, the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash never leaves a half-written file."""
    with atomic_file(path) as f:
        f.write(data)


@contextmanager
def replacing_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty directory beside ``out`` to write into; when the block succeeds it becomes ``out``.

    The previous ``out`` is removed only once the new one is in place, so a reader
    (or a crash) sees the old output or the new one, never a mix.  When the block
    raises, the temporary directory goes and ``out`` is left as it was.  One
    writer per ``out`` at a time: leftovers of an earlier killed writer are
    removed on entry.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the directory the usual mode
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old)  # onto the empty placeholder: rename replaces an empty directory
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)  # the swap itself failed: put the previous output back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def files_sha256(files: Iterable[str | Path], root: str | Path | None = None) -> str:
    """sha256 over ``files`` in the order given: each one's path relative to ``root`` (when given), then its bytes."""
    h = hashlib.sha256()
    for file in files:
        if root is not None:
            h.update(str(Path(file).relative_to(root)).encode())
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def dir_sha256(root: str | Path, skip: str | None = None) -> tuple[str, int]:
    """:func:`files_sha256` over every file under ``root`` (sorted, names relative to it) but those named ``skip``;
    and how many files that is."""
    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name != skip)
    return files_sha256(files, root=root), len(files)


def with_digest(root: str | Path, manifest: dict) -> dict:
    """``manifest`` plus ``digest``: the sha256 of every file under ``root`` (:func:`dir_sha256`) and their count.

    An ingest stage writes it as ``root/manifest.json`` last; the later stages then depend on that one
    file in dvc.yaml (it changes whenever a sample does) and DVC checks one file per stage, not every sample.
    """
    sha, count = dir_sha256(root, skip="manifest.json")
    return {**manifest, "digest": {"sha256": sha, "files": count}}


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8-bit RGB image as float32 ``(H, W, 3)`` in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    return arr / 255.0


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write float ``(H, W, 3)`` in [0, 1] as an 8-bit PNG (deterministic bytes)."""
    from io import BytesIO

    from PIL import Image

    u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(u8).save(buf, format="PNG", optimize=False, compress_level=1)  # noisy data barely compresses
    atomic_write_bytes(path, buf.getvalue())


PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type: gray, gray + alpha, RGB, RGBA


def write_png_bands(f: BinaryIO, height: int, width: int, channels: int, dtype: np.dtype,
                    bands: Iterable[np.ndarray], level: int = 1) -> None:
    """Write a PNG to ``f`` from ``bands`` of rows, top to bottom, holding one band at a time.

    Each band is (rows, ``width``) or (rows, ``width``, ``channels``), uint8 or
    uint16 (the PNG's bit depth), channels in PNG order (gray, gray + alpha,
    RGB, RGBA).  Rows use PNG's Sub filter; ``level`` is zlib's (1: noisy data
    barely compresses).  Raises ValueError when the bands do not make
    ``height`` rows; an OSError of ``f`` (disk full) propagates.
    """
    import struct
    import zlib

    depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}[np.dtype(dtype)]
    bpp = channels * depth // 8  # bytes per pixel: the Sub filter's offset

    def chunk(tag: bytes, data: bytes) -> None:
        f.write(struct.pack(">I", len(data)) + tag)
        f.write(data)
        f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(tag))))

    f.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, PNG_COLOR_TYPES[channels], 0, 0, 0))
    compressor = zlib.compressobj(level)
    rows = 0
    for band in bands:
        raw = np.ascontiguousarray(band, ">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(len(band), -1)
        filtered = np.empty((len(band), 1 + raw.shape[1]), np.uint8)  # (rows, filter byte + row bytes)
        filtered[:, 0] = 1  # Sub: each byte minus the same byte of the pixel to its left
        filtered[:, 1 : 1 + bpp] = raw[:, :bpp]
        np.subtract(raw[:, bpp:], raw[:, :-bpp], out=filtered[:, 1 + bpp :])
        rows += len(band)
        data = compressor.compress(filtered)
        if data:
            chunk(b"IDAT", data)
    if rows != height:
        raise ValueError(f"PNG of {height} rows: the bands held {rows}")
    chunk(b"IDAT", compressor.flush())
    chunk(b"IEND", b"")
