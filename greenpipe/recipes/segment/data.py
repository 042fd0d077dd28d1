"""The segment recipe's data: the class map, the Cityscapes layout reader, the prepared layout.

Prepared layout (what ingest writes and every later stage reads)::

    <root>/manifest.json                   # {"layout", "classes": [names], "samples": [{name, split, ...}]}
    <root>/<split>/images/<name>.png       # RGB, 8-bit
    <root>/<split>/labels/<name>.png       # 8-bit class index into "classes"; 255 = ignore

Cityscapes layout (``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png``): label ids are mapped to
the official train ids (cityscapesScripts' ``labels.py``), then to the index
of the class in ``segment.data.classes``; every other id is ``IGNORE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenpipe.errors import DataError

IGNORE = 255  # label value that no metric and no loss counts
SPLITS = ("train", "val")

# The 19 Cityscapes train ids, in order (cityscapesScripts, labels.py).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# labelId -> trainId for the ids that have one (every other id, 0-6, 9, 10, 14-16, 18, 29, 30, -1: ignore).
CITYSCAPES_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def class_lut(classes: tuple[str, ...]) -> np.ndarray:
    """A 256-entry table: Cityscapes labelId -> index of its train class in ``classes`` (else IGNORE)."""
    lut = np.full(256, IGNORE, np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_ID.items():
        name = CITYSCAPES_CLASSES[train_id]
        if name in classes:
            lut[label_id] = classes.index(name)
    return lut


@dataclass(frozen=True)
class Sample:
    """One prepared image and its label map."""

    name: str
    image: Path
    label: Path

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) float32 in [0, 1], label (H, W) uint8)."""
        from greenpipe.io import read_image

        return read_image(self.image), read_label(self.label)


def read_label(path: Path) -> np.ndarray:
    """An 8-bit single-channel label PNG as (H, W) uint8."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DataError(f"{path}: a label map must be 8-bit single-channel (mode L), not {im.mode}; "
                                "write class indices as a grey PNG")
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: label file missing; every image needs its label map (rerun ingest)") from None


def write_label(path: Path, label: np.ndarray) -> None:
    """Write an (H, W) uint8 label map as a grey PNG, atomically."""
    import io

    from PIL import Image

    from greenpipe.io import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8), mode="L").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def split_samples(root: Path, split: str) -> list[Sample]:
    """The prepared samples of ``split`` listed in ``root/manifest.json``."""
    from greenpipe.io import read_json

    manifest = root / "manifest.json"
    if not manifest.exists():
        raise DataError(f"{manifest}: no prepared segment dataset here; run the segment_ingest stage")
    return [Sample(r["name"], root / split / "images" / f"{r['name']}.png", root / split / "labels" / f"{r['name']}.png")
            for r in read_json(manifest)["samples"] if r["split"] == split]


def classes_of(root: Path) -> tuple[str, ...]:
    from greenpipe.io import read_json

    return tuple(read_json(root / "manifest.json")["classes"])


def cityscapes_pairs(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    """(name, image, labelIds file) of every ``leftImg8bit/<split>/<city>/*`` image, sorted.

    A missing label file is an error naming it (a Cityscapes download without ``gtFine``).
    """
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not images:
        raise DataError(f"{root / 'leftImg8bit' / split}: no *_leftImg8bit.png images; point "
                        "segment.data.cityscapes_root at a folder holding leftImg8bit/ and gtFine/")
    pairs = []
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        label = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.exists():
            raise DataError(f"{label}: label file missing for {image}; download gtFine_trainvaltest "
                            "and unpack it beside leftImg8bit/")
        pairs.append((stem, image, label))
    return pairs
