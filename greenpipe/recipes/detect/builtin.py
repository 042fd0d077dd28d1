"""Annotated tree-crown images taken from a ``deepforest`` wheel's data files (no deepforest install).

The deepforest wheel (MIT, weecology/DeepForest) ships, beside its code, Pascal VOC XML files and
the aerial images they annotate under ``deepforest/data/``: in 2.1.0 four images with 951 boxes
(OSBS_029 61 ``Tree``, SOAP_061 9 ``Alive`` + 28 ``Dead``, two NEON Yellowstone crops with 279 and
574 ``Tree``). :func:`voc_from_wheel` copies only those XML files, the images they name and the
licence into a VOC directory that :func:`greenpipe.recipes.detect.data.load` reads. The wheel is
fetched by a build step (``pip download deepforest==2.1.0 --no-deps``), never at run time;
nothing of deepforest is imported or installed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path, PurePosixPath

from greenpipe.errors import DataError

DATA_DIR = "deepforest/data/"


def voc_from_wheel(wheel: str | Path, out: str | Path) -> list[Path]:
    """Write every annotated image of ``wheel`` and its XML into ``out``; return the XML files written.

    An XML whose image is not in the wheel is skipped (the validator would reject it); the wheel's
    licence files go to ``out/LICENSES/``.
    """
    wheel, out = Path(wheel), Path(out)
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{wheel}: not a readable wheel ({exc}); fetch it with "
                        "`pip download deepforest==2.1.0 --no-deps`") from None
    written = []
    with archive:
        names = set(archive.namelist())
        for name in sorted(n for n in names if n.startswith(DATA_DIR) and n.endswith(".xml")):
            xml = archive.read(name)
            image = (ET.fromstring(xml).findtext("filename") or "").strip()
            if not image or DATA_DIR + image not in names:
                continue
            out.mkdir(parents=True, exist_ok=True)
            (out / image).write_bytes(archive.read(DATA_DIR + image))
            (out / PurePosixPath(name).name).write_bytes(xml)
            written.append(out / PurePosixPath(name).name)
        for name in sorted(n for n in names if ".dist-info/licenses/" in n or n.endswith(".dist-info/LICENSE")):
            (out / "LICENSES").mkdir(parents=True, exist_ok=True)
            (out / "LICENSES" / PurePosixPath(name).name).write_bytes(archive.read(name))
    if not written:
        raise DataError(f"{wheel}: no VOC XML with its image under {DATA_DIR}; is it a deepforest wheel?")
    return written
