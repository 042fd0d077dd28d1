"""The detect recipe's validate stage: the prepared tiles read back and checked, split by split.

Every split is read as the VOC folder it is and validated by greenpipe/recipes/detect/data.py
(duplicate ids, missing images, unknown classes, empty boxes, boxes outside the image: one named
error each, naming the file and the object); then the counts against ``detect.validate``
(``min_train`` / ``min_val`` tiles, ``min_objects`` boxes in train). A failure raises; success writes
the counts with ``success: true``, which the train stage requires.
"""

from __future__ import annotations

from pathlib import Path

from greenpipe.errors import DataError
from greenpipe.io import read_json
from greenpipe.params import Params
from greenpipe.recipes.detect.data import load
from greenpipe.recipes.detect.ingest import SPLITS


def validate(params: Params, paths: dict[str, Path]) -> dict:
    """Check the prepared tiles under ``paths["data"]``; return their counts or raise DataError."""
    root = Path(paths["data"])
    vp = params.recipe_section("detect").validate_
    classes = tuple(read_json(root / "manifest.json")["classes"])
    found = {}
    for split in SPLITS:
        data = load(root / split, "voc", classes)
        found[split] = {"tiles": len(data.samples), "objects": int(sum(len(s.boxes) for s in data.samples)),
                        "empty_tiles": sum(len(s.boxes) == 0 for s in data.samples)}
    for key, have, need in (("min_train", found["train"]["tiles"], vp.min_train),
                            ("min_val", found["val"]["tiles"], vp.min_val),
                            ("min_objects", found["train"]["objects"], vp.min_objects)):
        if have < need:
            raise DataError(f"{root}: {have} {'boxes in train' if key == 'min_objects' else key[4:] + ' tiles'} "
                            f"< detect.validate.{key} = {need}; bring more annotated images or lower detect.data.tile")
    return {"success": True, "classes": list(classes), **found}
