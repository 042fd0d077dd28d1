"""The segment recipe's ingest stage: generated scenes or a Cityscapes folder -> the prepared layout.

``builtin``: ``segment.data.train_scenes`` + ``val_scenes`` street scenes of
``segment.data.size`` drawn from ``base.seed`` (greenpipe/recipes/segment/scenes.py),
textured from the photographs under ``photos``.  ``cityscapes``: every
``leftImg8bit/{train,val}`` image (at most ``max_images`` per split) with its
``gtFine`` labelIds, labels mapped to ``segment.data.classes`` (255 elsewhere),
both resized to ``size`` (labels by nearest neighbour).  Written whole or not
at all (greenpipe.io.replacing_dir); ``manifest.json`` last, with the digest of
every sample file (greenpipe.io.with_digest), which is what the later stages
depend on in dvc.yaml.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from greenpipe.io import replacing_dir, with_digest, write_image, write_json
from greenpipe.params import Params
from greenpipe.recipes.segment.data import IGNORE, SPLITS, class_lut, cityscapes_pairs, read_label, write_label
from greenpipe.recipes.segment.scenes import SCENE_CLASSES, draw_scene, load_photos


def _resize(img: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    h, w = size
    if img.shape[:2] == (h, w):
        return img, label
    pic = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    lab = Image.fromarray(label).resize((w, h), Image.NEAREST)
    return np.asarray(pic, np.float32) / 255, np.asarray(lab, np.uint8)


def ingest(params: Params, paths: dict[str, Path]) -> dict:
    """Write the prepared dataset to ``paths["out"]`` from ``paths["photos"]`` (builtin) or Cityscapes."""
    from greenpipe.io import read_image

    dp = params.recipe_section("segment").data
    t0 = time.perf_counter()
    rows, pixels = [], np.zeros(len(dp.classes), np.int64)
    with replacing_dir(paths["out"]) as out:
        def put(split: str, name: str, img: np.ndarray, label: np.ndarray) -> None:
            write_image(out / split / "images" / f"{name}.png", img)
            write_label(out / split / "labels" / f"{name}.png", label)
            pixels[:] += np.bincount(label[label != IGNORE], minlength=len(dp.classes))[: len(dp.classes)]
            rows.append({"name": name, "split": split, "height": label.shape[0], "width": label.shape[1]})

        if dp.source == "builtin":
            photos = load_photos(Path(paths["photos"]))
            # scene class index -> index in segment.data.classes (IGNORE for a class not kept)
            remap = np.array([dp.classes.index(c) if c in dp.classes else IGNORE for c in SCENE_CLASSES]
                             + [IGNORE] * (256 - len(SCENE_CLASSES)), np.uint8)
            rng = np.random.default_rng([params.base.seed, 24])
            for split, count in (("train", dp.train_scenes), ("val", dp.val_scenes)):
                for k in range(count):
                    img, label = draw_scene(rng, *dp.size, photos)
                    put(split, f"scene{k:04d}", img, remap[label])
        else:
            lut = class_lut(dp.classes)
            for split in SPLITS:
                pairs = cityscapes_pairs(Path(dp.cityscapes_root), split)
                for name, image, label in pairs[: dp.max_images or None]:
                    put(split, name, *_resize(read_image(image), lut[read_label(label)], dp.size))
        write_json(out / "manifest.json", with_digest(out, {"layout": dp.source, "classes": list(dp.classes),
                                                            "samples": rows}))
    return {
        "layout": dp.source,
        **{f"{s}_samples": sum(r["split"] == s for r in rows) for s in SPLITS},
        "class_pixels": dict(zip(dp.classes, pixels.tolist())),
        "wall_s": time.perf_counter() - t0,
    }
