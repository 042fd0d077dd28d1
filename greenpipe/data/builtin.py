"""The built-in dataset: real photographs (colour and grey) that installed packages ship.

No download: the images are files inside scikit-image and scikit-learn (see
``sources.json`` beside this module for each one's licence and attribution,
quoted from the package that ships it).  :func:`materialize`
copies them byte for byte, so the copy, and its DVC hash, is the same on every
machine whose packages ship the same images::

    out/clean/<name>.<ext>     # e.g. clean/coffee.png, clean/china.jpg
    out/SOURCES.json           # one record per image: licence, attribution, sha256

Run it as ``greenpipe data builtin`` (it writes ``data``, where dvc.yaml's
ingest stage reads).  The noise is added later, by ``ingest``
(greenpipe.data.noise).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from importlib import resources
from pathlib import Path

from greenpipe.errors import DataError
from greenpipe.io import atomic_write_bytes, write_json

SOURCES_FILE = "SOURCES.json"


def sources() -> list[dict]:
    """The licence records of ``sources.json``, in file order."""
    return json.loads(resources.files("greenpipe.data").joinpath("sources.json").read_text(encoding="utf-8"))


def locate(record: dict) -> Path | None:
    """Where the record's file lies in the installed package, or None if absent.

    Found through the module spec, so the package is not imported (importing
    scikit-learn costs a second and is not needed to read a file).
    """
    spec = importlib.util.find_spec(record["module"])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / record["path"]
    return path if path.is_file() else None


def _decoded_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: the built-in image does not decode ({exc}); reinstall the package that ships it"
        ) from None


def _check_out_dir(out_dir: Path, names: set[str]) -> None:
    """Refuse to mix the built-in images into a folder holding other data."""
    if not out_dir.exists():
        return
    foreign = [p.name for p in out_dir.iterdir() if p.name not in ("clean", SOURCES_FILE)]
    if (out_dir / "clean").is_dir():
        foreign += [f"clean/{p.name}" for p in (out_dir / "clean").iterdir() if p.name not in names]
    if foreign:
        shown = ", ".join(sorted(foreign)[:8]) + (" ..." if len(foreign) > 8 else "")
        raise DataError(
            f"{out_dir}: holds other files ({shown}); the built-in images would mix with them. "
            "Empty the folder or choose another one."
        )


def materialize(out_dir: str | Path) -> list[dict]:
    """Copy the built-in images to ``out_dir/clean`` and write ``out_dir/SOURCES.json``.

    Returns the written records (name, file, package, path, sha256, bytes,
    width, height, title, licence, attribution, stated_in).  Twice in a row it
    writes identical bytes.  Package versions are left out on purpose: the
    sha256 pins each image, and a version bump that ships the same images
    must not change the dataset's DVC hash.
    """
    out_dir = Path(out_dir)
    found: list[tuple[dict, Path]] = []
    for record in sources():
        path = locate(record)
        if path is None:
            if record.get("optional"):
                continue
            raise DataError(
                f"built-in image {record['name']!r}: {record['path']} is not in the installed "
                f"{record['package']}; reinstall it (`uv pip install --reinstall {record['package']}`)"
            )
        found.append((record, path))
    names = {f"{r['name']}{p.suffix.lower()}" for r, p in found}
    _check_out_dir(out_dir, names)

    written = []
    for record, path in found:
        data = path.read_bytes()
        width, height = _decoded_size(path)
        file = f"clean/{record['name']}{path.suffix.lower()}"
        atomic_write_bytes(out_dir / file, data)
        written.append(
            {
                "name": record["name"],
                "file": file,
                "package": record["package"],
                "path": record["path"],
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "width": width,
                "height": height,
                "title": record["title"],
                "licence": record["licence"],
                "attribution": record["attribution"],
                "stated_in": record["stated_in"],
            }
        )
    write_json(out_dir / SOURCES_FILE, written)
    return written
