"""Recipe ``detect`` (in progress, not registered): SSD object detection scored by mAP (pycocotools).

What exists: SSD models with a VGG-style or MobileNet-style backbone (:mod:`.model`), box maths
and prior matching (:mod:`.boxes`), the multibox loss (:mod:`.loss`), the decode + NMS post-process
every runtime shares (:mod:`.postprocess`), VOC / COCO readers with validation (:mod:`.data`),
the training task (:mod:`.training`), COCOeval metrics (:mod:`.metrics`) and the deepforest
wheel's annotated images (:mod:`.builtin`); the SSD lists its prunable units for
greenpipe.prune.lkam. :data:`DETECT` scores any runner (PyTorch, ONNX Runtime, ...) through
:meth:`DetectRecipe.evaluate`.

Not yet: it is not in ``RECIPES`` because it has no params.yaml section and no dvc.yaml stages, so
the every-recipe end-to-end test cannot run it; the protocol's calibration dump, pipeline
boundaries, sample images, references and device-job methods are not written. Importing this
module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenpipe.recipes.base import Evaluation, Metric, Quality
from greenpipe.recipes.detect.boxes import feature_sizes, prior_boxes
from greenpipe.recipes.detect.data import load, load_image
from greenpipe.recipes.detect.metrics import Boxes, coco_map
from greenpipe.recipes.detect.postprocess import detections

if TYPE_CHECKING:
    from torch import nn

METRICS = (
    Metric("map50", "mAP@0.5", "", True, 0.0, 1.0),
    Metric("map50_95", "mAP@0.5:0.95", "", True, 0.0, 1.0),
)


class DetectRecipe:
    name = "detect"
    metrics = METRICS
    self_ensemble = False  # flipping an image moves its boxes: averaging outputs is meaningless
    validate_params = None

    def build_model(self, model_args: dict[str, Any]) -> nn.Module:
        from greenpipe.recipes.detect.model import build_ssd

        return build_ssd(model_args)

    def multiple(self, model_args: dict[str, Any]) -> int:
        return 16  # the model takes a fixed square size (SSDConfig.input_size), a multiple of 16

    def bench_input(self, model_args: dict[str, Any], input_size: int) -> tuple[int, ...]:
        size = model_args["input_size"]
        return (1, 3, size, size)

    def evaluate(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        data_root: Path,
        max_side: int = 0,
        multiple: int = 16,
        outputs: dict[str, np.ndarray] | None = None,
        *,
        input_size: int = 128,
        fmt: str = "auto",
        classes: tuple[str, ...] = (),
        score_threshold: float = 0.01,
        iou_threshold: float = 0.45,
    ) -> Evaluation:
        """Score ``run`` ((1, 3, S, S) -> (1, P, 4 + C) raw head outputs) on every image under ``data_root``.

        ``data_root`` is a VOC or COCO directory (:mod:`.data`), validated first; every image is
        resized to ``input_size`` (the model's), detections are mapped back to its pixels and scored
        by COCOeval. ``outputs`` gets (K, 6) rows x1, y1, x2, y2, score, class per image id.
        ``max_side`` and ``multiple`` are the protocol's (a fixed-size model ignores them).
        """
        data = load(data_root, fmt, classes)
        priors = prior_boxes(feature_sizes(input_size))
        truth, found, sizes, rows = [], [], [], []
        for s in data.samples:
            (d,) = detections(run(load_image(s.image, input_size)[None]), priors, score_threshold, iou_threshold)
            px = d.boxes * np.array([s.width, s.height, s.width, s.height], np.float32)
            truth.append(Boxes(s.boxes, data.labels(s)))
            found.append(Boxes(px, d.classes, d.scores))
            sizes.append((s.width, s.height))
            rows.append({"name": s.id, "objects": len(s.boxes), "detections": len(d.scores)})
            if outputs is not None:
                outputs[s.id] = np.concatenate([px, d.scores[:, None], d.classes[:, None]], 1)
        scores = coco_map(truth, found, data.classes, sizes)
        values = {"map50": scores["map50"], "map50_95": scores["map50_95"]}
        return Evaluation(Quality.of(METRICS, values, len(data.samples)), rows,
                          {"ap50_per_class": scores["ap50"], "classes": list(data.classes)})


DETECT = DetectRecipe()
