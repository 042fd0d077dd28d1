"""Small file helpers shared by the stages: atomic writes and directory swaps, JSON metrics, images."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes | memoryview,
                       before_replace: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` so that a crash never leaves a half-written file.

    The data goes to a hidden temporary file beside ``path`` (no suffix of its own), which is
    renamed onto ``path`` once whole; ``before_replace`` runs just before that rename (e.g. to
    move the file being replaced aside).  On any failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
