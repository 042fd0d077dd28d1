"""The segment recipe's data checks: the prepared dataset, checked with Great Expectations.

One row per file on disk under ``<split>/images`` and ``<split>/labels``; the
suite (:func:`make_checks`) names one error per problem: ``decodes``,
``label_present`` (an image without its label file), ``label_size`` (image and
label of different sizes), ``label_ids`` (label values outside the class map:
neither a class index nor 255), ``class_histogram`` (a label map with no pixel
of any class), and ``min_train`` / ``min_val``.  The reports are those of
:func:`greenpipe.validate.check_table`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from greenpipe.params import Params
from greenpipe.recipes.segment.data import IGNORE, SPLITS, classes_of


def build_table(root: Path) -> Any:
    """The per-file table: one row per image and per label file of every split."""
    import pandas as pd
    from PIL import Image

    classes = classes_of(root)
    rows = []
    for split in SPLITS:
        images = {p.stem: p for p in sorted((root / split / "images").glob("*.png"))}
        labels = {p.stem: p for p in sorted((root / split / "labels").glob("*.png"))}
        sizes: dict[Path, tuple[int, int] | None] = {}
        for role, files, partners in (("image", images, labels), ("label", labels, images)):
            for name, path in files.items():
                row = {"file": str(path.relative_to(root)), "split": split, "role": role, "decode_error": "",
                       "has_partner": name in partners, "size_match": True, "bad_ids": 0, "class_pixels": 1,
                       "size": ""}
                try:
                    with Image.open(path) as im:
                        arr = np.asarray(im)
                except (OSError, SyntaxError, ValueError) as exc:
                    row["decode_error"] = str(exc) or type(exc).__name__
                    arr = None
                sizes[path] = None if arr is None else arr.shape[:2]
                row["size"] = "" if arr is None else f"{arr.shape[1]}x{arr.shape[0]}"
                if role == "label" and arr is not None:
                    ids = arr.ravel() if arr.ndim == 2 else arr[..., 0].ravel()
                    known = (ids < len(classes)) | (ids == IGNORE)
                    row["bad_ids"] = int((~known).sum())
                    row["bad_values"] = " ".join(str(v) for v in np.unique(ids[~known])[:5])
                    row["class_pixels"] = int((ids < len(classes)).sum())
                rows.append(row)
        for name in set(images) & set(labels):
            if None not in (sizes[images[name]], sizes[labels[name]]) and sizes[images[name]] != sizes[labels[name]]:
                for row in rows:
                    if row["file"] in (str(images[name].relative_to(root)), str(labels[name].relative_to(root))):
                        row["size_match"] = False
                        row["partner_size"] = "x".join(str(v) for v in reversed(sizes[labels[name]]))
    table = pd.DataFrame(rows)
    for col in ("bad_values", "partner_size"):
        if col not in table:
            table[col] = ""
    return table.fillna({"bad_values": "", "partner_size": ""})


def make_checks(min_train: int, min_val: int, classes: int) -> list:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    from greenpipe.validate import Check

    def images(split: str) -> Any:
        return (Column("role") == "image") & (Column("split") == split)

    return [
        Check("decodes", gxe.ExpectColumnValuesToBeInSet(column="decode_error", value_set=[""]),
              "a readable PNG", lambda r: r["decode_error"]),
        Check("label_present", gxe.ExpectColumnValuesToBeInSet(column="has_partner", value_set=[True]),
              "an image and its label file of the same name",
              lambda r: "no label file" if r["role"] == "image" else "no image for this label"),
        Check("label_size", gxe.ExpectColumnValuesToBeInSet(column="size_match", value_set=[True]),
              "image and label of the same size", lambda r: f"{r['size']} vs label {r['partner_size']}"),
        Check("label_ids", gxe.ExpectColumnValuesToBeBetween(column="bad_ids", max_value=0),
              f"label values in 0..{classes - 1} (the class map) or {IGNORE} (ignore)",
              lambda r: f"{r['bad_ids']} px with values {r['bad_values']}"),
        Check("class_histogram", gxe.ExpectColumnValuesToBeBetween(column="class_pixels", min_value=1),
              "at least one pixel of a class (not all ignore)", lambda r: "every pixel is ignore (255)"),
        Check("min_train", gxe.ExpectTableRowCountToBeBetween(min_value=min_train, row_condition=images("train")),
              f">= {min_train} train images", split="train"),
        Check("min_val", gxe.ExpectTableRowCountToBeBetween(min_value=min_val, row_condition=images("val")),
              f">= {min_val} val images", split="val"),
    ]


def validate(params: Params, paths: dict[str, Path]) -> dict:
    """Check the prepared dataset ``paths["data"]``; reports under ``paths["reports"]``; raise on failure."""
    from greenpipe.validate import check_table

    data, reports = Path(paths["data"]), Path(paths["reports"])
    vp = params.recipe_section("segment").validate_
    table = build_table(data)
    verdict = check_table(table, make_checks(vp.min_train, vp.min_val, len(classes_of(data))), data, reports)
    images = table[table["role"] == "image"]
    return verdict.outcome(data, reports, len(table), {s: int((images["split"] == s).sum()) for s in SPLITS})
