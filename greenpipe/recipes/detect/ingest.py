"""The detect recipe's ingest stage: annotated images -> validated tiles, split into train and val.

The source (``detect.data.source``) is read and validated first (greenpipe/recipes/detect/data.py:
one named error per fault). Every image is cut into ``tile`` x ``tile`` px crops that do not
overlap (the last row and column narrower, dropped under a quarter tile; an image smaller than a
tile is one tile); a box cut by a tile edge is kept, clipped, when at least ``min_visible`` of its area is
inside, and dropped otherwise. Tiles are shuffled with ``base.seed`` and ``val_fraction`` of them
(at least one) become val. Prepared layout, written whole or not at all::

    <out>/manifest.json             classes (label order), input_size, source, per-tile rows, digest
    <out>/{train,val}/<tile>.png    RGB
    <out>/{train,val}/<tile>.xml    Pascal VOC, boxes in the tile's pixels

Each split is itself a VOC folder that :func:`greenpipe.recipes.detect.data.load` reads. The later
stages depend on ``manifest.json`` alone in dvc.yaml: its digest covers every tile (greenpipe.io.with_digest).
"""

from __future__ import annotations

import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

from greenpipe.errors import DataError
from greenpipe.io import replacing_dir, with_digest, write_json
from greenpipe.params import Params
from greenpipe.recipes.detect.builtin import voc_from_wheel
from greenpipe.recipes.detect.data import Sample, load

WHEEL_HINT = "python -m pip download deepforest==2.1.0 --no-deps --only-binary=:all: -d .whl  (make setup does it)"

SPLITS = ("train", "val")


def tile_origins(size: int, tile: int) -> list[int]:
    """Left (or top) edges of the tiles along ``size`` px: every ``tile`` px, no overlap (so no object is in
    two tiles, which could put it in both splits); a last, narrower tile is kept when at least a quarter
    of ``tile`` wide."""
    return [0] + [s for s in range(tile, size, tile) if size - s >= tile // 4]


def cut(boxes: np.ndarray, x0: int, y0: int, w: int, h: int, min_visible: float) -> np.ndarray:
    """Indices of ``boxes`` (K, 4 corners, px) kept in the tile at (x0, y0) of w x h px, and the clipped boxes."""
    clipped = np.stack([np.clip(boxes[:, 0] - x0, 0, w), np.clip(boxes[:, 1] - y0, 0, h),
                        np.clip(boxes[:, 2] - x0, 0, w), np.clip(boxes[:, 3] - y0, 0, h)], 1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
    inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), 1)
    keep = np.flatnonzero(inside >= min_visible * area)
    return keep, clipped[keep]


def voc_xml(filename: str, width: int, height: int, boxes: np.ndarray, names: list[str]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for box, name in zip(boxes, names):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, tag).text = f"{float(v):.2f}"
    return ET.tostring(root)


def _tiles(sample: Sample, tile: int, min_visible: float):
    """(name, RGB crop (h, w, 3) uint8, boxes, names) of every tile of ``sample`` (read whole, now)."""
    from PIL import Image

    with Image.open(sample.image) as im:
        rgb = np.asarray(im.convert("RGB"))
    for y0 in tile_origins(sample.height, tile):
        for x0 in tile_origins(sample.width, tile):
            crop = rgb[y0:y0 + tile, x0:x0 + tile]
            h, w = crop.shape[:2]
            keep, boxes = cut(sample.boxes, x0, y0, w, h, min_visible)
            yield f"{sample.id}_{y0}_{x0}", crop, boxes, [sample.names[k] for k in keep]


def ingest(params: Params, paths: dict[str, Path]) -> dict:
    """Write the prepared tiles to ``paths["out"]`` from the deepforest wheel ``paths["wheel"]`` or ``detect.data.root``."""
    from PIL import Image

    dp = params.recipe_section("detect").data
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if dp.source == "builtin":
            wheel = Path(paths["wheel"])
            if not wheel.is_file():
                raise DataError(f"{wheel}: the deepforest wheel that holds the built-in detection data is not there; "
                                f"fetch it once with: {WHEEL_HINT}")
            voc_from_wheel(wheel, tmp)
            root, source = Path(tmp), wheel.name
        else:
            root = source = Path(dp.root)
        data = load(root, "auto" if dp.source == "builtin" else dp.source, dp.classes)
        tiles = [t for s in data.samples for t in _tiles(s, dp.tile, dp.min_visible)]
    order = np.random.default_rng([params.base.seed, 25]).permutation(len(tiles))
    n_val = max(1, round(dp.val_fraction * len(tiles)))
    split_of = {int(k): ("val" if rank < n_val else "train") for rank, k in enumerate(order)}
    rows, objects = [], {s: Counter() for s in SPLITS}
    with replacing_dir(paths["out"]) as out:
        for k, (name, crop, boxes, names) in enumerate(tiles):
            split = split_of[k]
            (out / split).mkdir(exist_ok=True)
            Image.fromarray(crop).save(out / split / f"{name}.png")
            (out / split / f"{name}.xml").write_bytes(voc_xml(f"{name}.png", crop.shape[1], crop.shape[0],
                                                              boxes, names))
            objects[split].update(names)
            rows.append({"name": name, "split": split, "width": crop.shape[1], "height": crop.shape[0],
                         "objects": len(names)})
        write_json(out / "manifest.json", with_digest(out, {
            "layout": dp.source, "source": str(source), "classes": list(data.classes),
            "input_size": dp.input_size, "tiles": rows}))
    return {
        "layout": dp.source,
        "images": len(data.samples),
        "source_objects": int(sum(len(s.boxes) for s in data.samples)),
        **{f"{s}_tiles": sum(r["split"] == s for r in rows) for s in SPLITS},
        **{f"{s}_objects": dict(sorted(objects[s].items())) for s in SPLITS},
        "classes": list(data.classes),
        "wall_s": time.perf_counter() - t0,
    }
