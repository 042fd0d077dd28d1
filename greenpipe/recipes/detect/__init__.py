"""Recipe ``detect``: SSD object detection scored by mAP (pycocotools), with kernel pruning.

Models (:mod:`.model`, written here: torchvision's detection ops do not load on this torch): an SSD
with a narrow VGG-style backbone and one with a light MobileNet-style backbone; both list their
prunable conv-BN-ReLU blocks (``SSD.prunable``) for the shared prune stage (greenpipe/prune/).
Box maths and prior matching (:mod:`.boxes`), the multibox loss with hard-negative mining
(:mod:`.loss`), the decode + NMS post-process every runtime shares (:mod:`.postprocess`: the graph
stops at the raw head outputs, NMS runs in numpy on the CPU after whichever runtime ran it).

Data: Pascal VOC or COCO folders (:mod:`.data`, validated with one named error per fault), by
default the annotated aerial tree-crown images of the deepforest wheel (:mod:`.builtin`), cut into
tiles by the recipe's ingest stage (:mod:`.ingest`). Scores (:mod:`.metrics`): COCOeval's mAP@0.5
(primary) and mAP@0.5:0.95, AP@0.5 per class.

Its own stages (``stages``, run by ``python -m tasks.recipe_stage``): ``ingest``, ``validate``,
``eval`` (:mod:`.evaluate`). Training, prune, calibration dump, quantize and compile are the shared
stages. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenpipe.io import read_json
from greenpipe.recipes.base import (
    RECIPES, Evaluation, Metric, OneKernelRecipe, Quality, Reference, write_sample_images,
)
from greenpipe.recipes.detect.boxes import feature_sizes, prior_boxes, priors_per_location
from greenpipe.recipes.detect.data import load, load_image
from greenpipe.recipes.detect.metrics import Boxes, coco_map
from greenpipe.recipes.detect.params import DetectParams
from greenpipe.recipes.detect.postprocess import detections

if TYPE_CHECKING:
    from torch import nn

    from greenpipe.calib import CalibrationSamples
    from greenpipe.params import Params

METRICS = (
    Metric("map50", "mAP@0.5", "", True, 0.0, 1.0),
    Metric("map50_95", "mAP@0.5:0.95", "", True, 0.0, 1.0),
)


def prepared(data_root: Path) -> tuple[Path, str, tuple[str, ...], int | None]:
    """(val folder, format, classes, input size) of ``data_root``: the ingest stage's layout, or a user's folder."""
    data_root = Path(data_root)
    manifest = data_root / "manifest.json"
    if manifest.is_file():
        m = read_json(manifest)
        return data_root / "val", "voc", tuple(m["classes"]), int(m["input_size"])
    return data_root, "auto", (), None


def render(raw: np.ndarray) -> np.ndarray:
    """A picture of one image's raw head outputs (P, 4 + C): its detections above 0.3 as outlines on black."""
    per_cell = priors_per_location()
    size = next(s for s in range(16, 4097, 16) if sum(f * f for f in feature_sizes(s)) * per_cell == raw.shape[0])
    (d,) = detections(raw[None], prior_boxes(feature_sizes(size)), 0.3)
    img = np.zeros((size, size, 3), np.float32)
    palette = np.array([[0.2, 1.0, 0.2], [1.0, 0.3, 0.3], [0.3, 0.5, 1.0], [1.0, 1.0, 0.2]], np.float32)
    for box, c in zip((d.boxes * (size - 1)).round().astype(int), d.classes):
        x1, y1, x2, y2 = box
        colour = palette[c % len(palette)]
        img[y1, x1:x2 + 1] = img[y2, x1:x2 + 1] = colour
        img[y1:y2 + 1, x1] = img[y1:y2 + 1, x2] = colour
    return img


class DetectRecipe(OneKernelRecipe):
    name = "detect"
    metrics = METRICS
    self_ensemble = False  # flipping an image moves its boxes: averaging outputs is meaningless
    validate_params = None  # its checks live in its own section (detect.validate), run by its own stage
    params_type = DetectParams

    @property
    def stages(self) -> dict[str, Callable[..., dict]]:
        from greenpipe.recipes.detect.evaluate import eval_stage
        from greenpipe.recipes.detect.ingest import ingest
        from greenpipe.recipes.detect.validate import validate

        return {"ingest": ingest, "validate": validate, "eval": lambda params, paths: eval_stage(self, params, paths)}

    def build_model(self, model_args: dict[str, Any]) -> nn.Module:
        """The SSD ``model_args`` describe; a pruned one (``kept``: kernel indices per unit) at its narrowed widths."""
        from greenpipe.prune.lkam import narrow
        from greenpipe.recipes.detect.model import build_ssd

        args = dict(model_args)
        kept = args.pop("kept", None)
        model = build_ssd(args)
        if kept:
            narrow(model.prunable(), kept)
        return model

    def boundaries(self, model: nn.Module) -> dict[str, nn.Module | None]:
        return {"input": None}

    def calibration_samples(self, model_dir: Path, data_root: Path, params: Params,
                            rng: np.random.Generator) -> CalibrationSamples:
        """``detect.calib_samples`` train tiles (drawn with ``rng``) at the model's input size, the input boundary."""
        from greenpipe.calib import CalibrationSamples
        from greenpipe.recipes.base import load_checkpoint

        count = params.recipe_section(self.name).calib_samples
        size = load_checkpoint(Path(model_dir) / "checkpoint.pt")["model_args"]["input_size"]
        _, fmt, classes, _ = prepared(data_root)
        train = load(Path(data_root) / "train", fmt, classes).samples

        def samples() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
            for _ in range(count):
                s = train[int(rng.integers(len(train)))]
                yield s.id, {"input": load_image(s.image, size)[None]}

        return CalibrationSamples(boundaries=["input"], samples=samples(), facts={"samples": count})

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
        """Score ``run`` ((1, 3, S, S) -> (1, P, 4 + C) raw head outputs) on every val image.

        ``data_root`` is the ingest stage's layout (its ``val/`` split, classes and input size from
        its ``manifest.json``) or a VOC / COCO directory, validated first (``input_size``, ``fmt``,
        ``classes`` apply to it). Every image is resized to the input size; the shared post-process
        (postprocess.detections: softmax score > ``score_threshold``, NMS at IoU ``iou_threshold``,
        100 per image; the stages keep the defaults) runs on the raw outputs,
        detections are mapped back to the image's pixels and scored by COCOeval. ``outputs`` gets each
        image's raw outputs (P, 4 + C) by id: fixed-shape, what the compile stage's agreement check
        compares. ``max_side`` and ``multiple`` are the protocol's (a fixed-size model ignores them).
        """
        root, found_fmt, found_classes, size = prepared(data_root)
        data = load(root, fmt if size is None else found_fmt, classes or found_classes)
        size = size or input_size
        priors = prior_boxes(feature_sizes(size))
        truth, found, sizes, rows = [], [], [], []
        for s in data.samples:
            raw = run(load_image(s.image, size)[None])
            (d,) = detections(raw, priors, score_threshold, iou_threshold)
            px = d.boxes * np.array([s.width, s.height, s.width, s.height], np.float32)
            truth.append(Boxes(s.boxes, data.labels(s)))
            found.append(Boxes(px, d.classes, d.scores))
            sizes.append((s.width, s.height))
            rows.append({"name": s.id, "objects": len(s.boxes), "detections": len(d.scores)})
            if outputs is not None:
                outputs[s.id] = np.asarray(raw[0], np.float32)
        scores = coco_map(truth, found, data.classes, sizes)
        values = {"map50": scores["map50"], "map50_95": scores["map50_95"]}
        return Evaluation(Quality.of(METRICS, values, len(data.samples)), rows,
                          {"ap50_per_class": scores["ap50"], "classes": list(data.classes)})

    def write_samples(self, outputs: Mapping[str, np.ndarray], out_dir: Path, count: int) -> list[Path]:
        """The first ``count`` images' detections (score > 0.3) as box outlines on black, one colour per class."""
        return write_sample_images(outputs, out_dir, count, render)

    def references(self, metrics: Path) -> list[Reference]:
        """The float models after training (``detect/train_<net>.json``)."""
        refs = []
        for path in sorted((metrics / "detect").glob("train_*.json")):
            net = path.stem[len("train_"):]
            train = read_json(path)
            refs.append(Reference(f"{net} float (PyTorch, after training)",
                                  {"map50": train["val_map50"], "map50_95": train["val_map50_95"]},
                                  f"metrics/detect/{path.name} (float model, val tiles)", "tab:green"))
        return refs

    def training(self, params: Params, data_root: Path, net: str = "vgg") -> Any:
        """Random train tiles for network ``net`` (a key of ``detect.models``), multibox loss."""
        from greenpipe.recipes.detect.training import task_for

        return task_for(params.recipe_section(self.name), Path(data_root), net)


DETECT = DetectRecipe()
RECIPES.register("detect")(DETECT)
