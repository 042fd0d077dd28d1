"""Detection data a user brings: Pascal VOC XML or COCO JSON under one root, read and validated.

Layouts (``fmt="auto"`` tells them apart by what is under the root):

- **voc**: ``<root>/Annotations/*.xml`` (or ``*.xml`` in the root itself), one file per image,
  ``<filename>``, ``<size>`` and ``<object><name>/<bndbox>`` in pixels; the image is
  ``<root>/JPEGImages/<filename>``, or beside the XML file.
- **coco**: one ``*.json`` in ``<root>/annotations/`` or the root, with ``images`` (``id``,
  ``file_name``, ``width``, ``height``), ``annotations`` (``id``, ``image_id``, ``category_id``,
  ``bbox`` = x, y, w, h in pixels) and ``categories`` (``id``, ``name``); images are
  ``<root>/images/<file_name>`` or ``<root>/<file_name>``.

:func:`validate` raises one named error per kind of fault (all :class:`DataError`), naming the
file, the object and the fix. An image without objects is a valid sample (it teaches background).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenpipe.errors import DataError

FORMATS = ("auto", "voc", "coco")


class BoxOutsideImage(DataError):
    """A box reaches past the image's edges."""


class EmptyBox(DataError):
    """A box has zero or negative width or height."""


class UnknownClass(DataError):
    """An object's class is not one of the data set's classes."""


class MissingImage(DataError):
    """An annotation names an image that is not there."""


class DuplicateId(DataError):
    """Two images, annotations or categories share an id (or two annotation files one image)."""


@dataclass(frozen=True)
class Sample:
    """One annotated image: boxes (K, 4) as x1, y1, x2, y2 in pixels, one class name per box."""

    id: str  # VOC: annotation file stem; COCO: image id
    image: Path
    width: int
    height: int
    boxes: np.ndarray
    names: tuple[str, ...]
    source: str  # where the annotation was read (file, and image id for COCO): what errors name
    object_ids: tuple[str, ...] = ()  # COCO annotation ids (VOC: object index), for error messages


@dataclass(frozen=True)
class DetectionSet:
    """Images and their boxes, with the class names in label order (label k = ``classes[k]``)."""

    samples: tuple[Sample, ...]
    classes: tuple[str, ...]
    fmt: str
    root: Path

    def labels(self, sample: Sample) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[n] for n in sample.names], dtype=np.int64)


def detect_format(root: Path) -> str:
    """``voc`` or ``coco`` from what ``root`` holds; a DataError saying what was looked for otherwise."""
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; point the data root param at a VOC or COCO folder")
    if (root / "Annotations").is_dir() or any(root.glob("*.xml")):
        return "voc"
    if _coco_files(root):
        return "coco"
    raise DataError(f"{root}: neither Pascal VOC (Annotations/*.xml or *.xml) nor COCO (annotations/*.json "
                    "or *.json) found; put the annotations in one of those layouts or state the format")


def read(root: str | Path, fmt: str = "auto", classes: tuple[str, ...] = ()) -> DetectionSet:
    """Read the annotations under ``root`` (not yet validated: see :func:`load`).

    ``classes`` fixes the class list and its order; empty: COCO's categories in id order, or for
    VOC the names found, sorted.
    """
    root = Path(root)
    if fmt not in FORMATS:
        raise DataError(f"data format {fmt!r}: choose one of {', '.join(FORMATS)}")
    fmt = detect_format(root) if fmt == "auto" else fmt
    samples, declared = _read_voc(root) if fmt == "voc" else _read_coco(root)
    if not classes:
        classes = declared or tuple(sorted({n for s in samples for n in s.names}))
    return DetectionSet(tuple(samples), tuple(classes), fmt, root)


def load(root: str | Path, fmt: str = "auto", classes: tuple[str, ...] = ()) -> DetectionSet:
    """:func:`read` then :func:`validate`."""
    data = read(root, fmt, classes)
    validate(data)
    return data


def validate(data: DetectionSet) -> None:
    """Raise the first fault found: duplicate id, missing image, unknown class, empty or outside box."""
    ids = Counter(s.id for s in data.samples)
    images = Counter(s.image for s in data.samples)
    for s in data.samples:
        if ids[s.id] > 1:
            raise DuplicateId(f"{s.source}: image id {s.id} is used by {ids[s.id]} images; "
                              "give every image its own id")
        if images[s.image] > 1:
            others = [o.source for o in data.samples if o.image == s.image and o is not s]
            raise DuplicateId(f"{s.source}: image {s.image.name} is also annotated by {', '.join(others)}; "
                              "keep one annotation per image")
        if not s.image.is_file():
            raise MissingImage(f"{s.source}: image {s.image} does not exist; add the image or remove "
                               "its annotation")
        for k, (box, name) in enumerate(zip(s.boxes, s.names)):
            what = f"{s.source}: object {s.object_ids[k] if s.object_ids else k} ({name})"
            if name not in data.classes:
                raise UnknownClass(f"{what}: class {name!r} is not one of {', '.join(data.classes)}; "
                                   "fix the label or add the class to the class list")
            x1, y1, x2, y2 = box
            if x2 <= x1 or y2 <= y1:
                raise EmptyBox(f"{what}: box {_fmt_box(box)} has width {x2 - x1:g} and height {y2 - y1:g} "
                               "px; a box needs positive size: fix its corners or remove the object")
            if x1 < 0 or y1 < 0 or x2 > s.width or y2 > s.height:
                raise BoxOutsideImage(f"{what}: box {_fmt_box(box)} reaches outside the {s.width}x{s.height} "
                                      "px image; clip it to the image or fix the image size")


def _fmt_box(box: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _read_voc(root: Path) -> tuple[list[Sample], tuple[str, ...]]:
    folder = root / "Annotations" if (root / "Annotations").is_dir() else root
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(f"{folder}: no *.xml annotation files; add Pascal VOC annotations")
    return [_voc_sample(root, f) for f in files], ()


def _voc_sample(root: Path, path: Path) -> Sample:
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}: not well-formed XML ({exc}); fix or remove the file") from None
    filename = (tree.findtext("filename") or "").strip()
    if not filename:
        raise DataError(f"{path}: no <filename>; name the image the file annotates")
    image = root / "JPEGImages" / filename
    if not image.exists():
        image = path.parent / filename
    boxes, names = [], []
    for k, obj in enumerate(tree.iter("object")):
        bb = obj.find("bndbox")
        try:
            boxes.append([float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")])
        except (AttributeError, TypeError, ValueError):
            raise DataError(f"{path}: object {k}: <bndbox> needs numeric xmin, ymin, xmax, ymax") from None
        names.append((obj.findtext("name") or "").strip())
    width, height = _int(tree.findtext("size/width")), _int(tree.findtext("size/height"))
    if not (width and height) and image.is_file():
        width, height = _image_size(image)
    return Sample(path.stem, image, width, height, np.array(boxes, np.float64).reshape(-1, 4),
                  tuple(names), str(path))


def _coco_files(root: Path) -> list[Path]:
    return sorted((root / "annotations").glob("*.json")) or sorted(root.glob("*.json"))


def _read_coco(root: Path) -> tuple[list[Sample], tuple[str, ...]]:
    files = _coco_files(root)
    if len(files) != 1:
        raise DataError(f"{root}: found {len(files)} COCO JSON files ({', '.join(f.name for f in files)}); "
                        "keep exactly one in annotations/ or the root")
    path = files[0]
    try:
        doc = json.loads(path.read_text())
        images, anns, cats = doc["images"], doc.get("annotations", []), doc.get("categories", [])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not COCO JSON ({exc!r}); it needs images, annotations, categories") from None
    for what, items in (("category", cats), ("annotation", anns)):
        seen = Counter(i["id"] for i in items)
        dup = next((k for k, n in seen.items() if n > 1), None)
        if dup is not None:
            raise DuplicateId(f"{path}: {what} id {dup} is used {seen[dup]} times; give each {what} its own id")
    names = {c["id"]: str(c["name"]) for c in sorted(cats, key=lambda c: c["id"])}
    by_image: dict = {i["id"]: [] for i in images}
    for a in anns:
        if a["image_id"] not in by_image:
            raise MissingImage(f"{path}: annotation {a['id']} names image id {a['image_id']}, which is not in "
                               "images; add the image entry or remove the annotation")
        by_image[a["image_id"]].append(a)
    image_dir = root / "images" if (root / "images").is_dir() else root
    samples = []
    for img in images:
        objs = by_image[img["id"]]
        xywh = np.array([a["bbox"] for a in objs], np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        samples.append(Sample(
            str(img["id"]), image_dir / img["file_name"], int(img["width"]), int(img["height"]), boxes,
            tuple(names.get(a["category_id"], f"<category_id {a['category_id']}>") for a in objs),
            f"{path} image {img['id']}", tuple(f"annotation {a['id']}" for a in objs)))
    return samples, tuple(names.values())


def _int(text: str | None) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return 0


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def load_image(path: Path, size: int) -> np.ndarray:
    """The image at ``path`` as the network sees it: RGB, resized to ``size`` x ``size``, (3, S, S) in [0, 1].

    Boxes normalised by the original width and height stay valid after the (aspect-changing) resize.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((size, size), Image.BILINEAR)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({exc}); replace it or remove its annotation") from None
    return np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0


def normalised(sample: Sample) -> np.ndarray:
    """``sample``'s boxes (K, 4) divided by its width and height: corners in [0, 1]."""
    return (sample.boxes / [sample.width, sample.height, sample.width, sample.height]).astype(np.float32)
