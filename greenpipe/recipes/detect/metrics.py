"""Detection quality by pycocotools' COCOeval: mAP@0.5, mAP@0.5:0.95 and AP@0.5 per class.

Ground truth and detections are boxes in pixels of the original image (x1, y1, x2, y2). The
figures are COCOeval's own (101-point interpolated precision, all areas, up to 100 detections
per image); nothing here computes AP by hand.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Boxes:
    """One image's boxes in pixels; ``scores`` is None for ground truth."""

    boxes: np.ndarray  # (K, 4) x1, y1, x2, y2
    classes: np.ndarray  # (K,) 0-based
    scores: np.ndarray | None = None


def _xywh(b: np.ndarray) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def coco_map(truth: Sequence[Boxes], found: Sequence[Boxes], classes: Sequence[str],
             sizes: Sequence[tuple[int, int]]) -> dict:
    """COCOeval of ``found`` against ``truth`` (one entry per image, same order; ``sizes`` = (W, H)).

    Returns ``map50``, ``map50_95`` and ``ap50`` {class: AP@0.5} for every class with ground truth.
    With no detections at all every AP is 0 (COCOeval cannot load an empty result list).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [{"id": i + 1, "width": int(w), "height": int(h)} for i, (w, h) in enumerate(sizes)],
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)], "annotations": []}
    for i, t in enumerate(truth):
        for b, c in zip(t.boxes, t.classes):
            xywh = _xywh(b)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                      "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0})
    dets = [{"image_id": i + 1, "category_id": int(c) + 1, "bbox": _xywh(b), "score": float(s)}
            for i, f in enumerate(found) for b, c, s in zip(f.boxes, f.classes, f.scores)]
    with_truth = sorted({int(c) for t in truth for c in t.classes})
    if not dets or not gt["annotations"]:
        return {"map50": 0.0, "map50_95": 0.0, "ap50": {classes[k]: 0.0 for k in with_truth}}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (IoU thresholds, recall points, classes, areas, max dets)
    ap50 = {}
    for k in with_truth:
        p = precision[0, :, k, 0, -1]  # IoU 0.5, all areas, 100 detections
        ap50[classes[k]] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return {"map50": max(float(ev.stats[1]), 0.0), "map50_95": max(float(ev.stats[0]), 0.0), "ap50": ap50}
