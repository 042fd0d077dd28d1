"""Recipe ``segment``: street-scene semantic segmentation, UNet vs HRNetV2, scored by mIoU.

Models (``models.py``, written here: no pretrained backbone can be downloaded,
both train from scratch): a UNet and HRNetV2 (widths ``tiny``, ``w18s``,
``w48``).  Data (``data.py``, ``scenes.py``): generated street scenes with
exact labels by default, or a Cityscapes folder.  Pipeline boundary: the model
input (one kernel).  Pre-processing: HWC [0, 1] -> NCHW float32, edge-padded
to the model's multiple; post-processing crops the padding and takes the
per-pixel argmax.  Scores: per-class IoU, mIoU (primary), pixel accuracy, from
one confusion matrix over the val split (scikit-learn), ignoring label 255.

Its own stages (``stages``, run by ``python -m tasks.recipe_stage``): ``ingest``,
``validate``, ``eval`` (mIoU and latency at three sizes of every compiled
artifact).  Training, calibration dump, quantize, compile, deploy and soak are
the shared stages.  Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenpipe.recipes.base import (
    RECIPES, Evaluation, Metric, OneKernelRecipe, Quality, Reference, write_sample_images,
)
from greenpipe.recipes.segment.data import IGNORE, classes_of, split_samples
from greenpipe.recipes.segment.figures import PALETTE, colour
from greenpipe.recipes.segment.params import SegmentParams

if TYPE_CHECKING:
    from torch import nn

    from greenpipe.calib import CalibrationSamples
    from greenpipe.params import Params

def to_input(img: np.ndarray, multiple: int) -> np.ndarray:
    """(H, W, 3) [0, 1] -> (1, 3, H', W') float32, edge-padded so H', W' are multiples of ``multiple``."""
    h, w = img.shape[:2]
    x = np.pad(img, ((0, (-h) % multiple), (0, (-w) % multiple), (0, 0)), mode="edge")
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of (K, H, W) logits, over K."""
    e = np.exp(logits - logits.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def scores(confusion: np.ndarray) -> dict[str, Any]:
    """IoU per class (NaN where a class is neither labelled nor predicted), mIoU over the others, pixel acc.

    ``confusion[t, p]`` counts pixels of true class t predicted as p (ignore pixels excluded).
    """
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    total = confusion.sum()
    return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
            "pixel_acc": float(tp.sum() / total) if total else 0.0, "per_class_iou": iou}


class SegmentRecipe(OneKernelRecipe):
    name = "segment"
    self_ensemble = False  # a rotated street scene is not a street scene
    validate_params = None  # its checks live in its own section (segment.validate), run by its own stage
    params_type = SegmentParams
    metrics = (
        Metric("miou", "mIoU", "", higher_is_better=True, lo=0.0, hi=1.0, fmt=".3f"),
        Metric("pixel_acc", "pixel acc.", "", higher_is_better=True, lo=0.0, hi=1.0, fmt=".3f"),
    )

    @property
    def stages(self) -> dict[str, Callable[..., dict]]:
        from greenpipe.recipes.segment.evaluate import eval_stage
        from greenpipe.recipes.segment.ingest import ingest
        from greenpipe.recipes.segment.validate import validate

        return {"ingest": ingest, "validate": validate, "eval": lambda params, paths: eval_stage(self, params, paths)}

    def build_model(self, model_args: dict[str, Any]) -> nn.Module:
        from greenpipe.recipes.segment.models import build

        return build(model_args)

    def boundaries(self, model: nn.Module) -> dict[str, nn.Module | None]:
        return {"input": None}

    def calibration_samples(self, model_dir: Path, data_root: Path, params: Params,
                            rng: np.random.Generator) -> CalibrationSamples:
        """``segment.calib_samples`` train images (drawn with ``rng``) as model inputs at the input boundary."""
        from greenpipe.calib import CalibrationSamples
        from greenpipe.recipes.base import load_checkpoint

        count = params.recipe_section(self.name).calib_samples
        mult = self.multiple(load_checkpoint(Path(model_dir) / "checkpoint.pt")["model_args"])
        train = split_samples(Path(data_root), "train")

        def samples() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
            for _ in range(count):
                s = train[int(rng.integers(len(train)))]
                yield s.name, {"input": to_input(s.load()[0], mult)}

        return CalibrationSamples(boundaries=["input"], samples=samples(), facts={"samples": count})

    def multiple(self, model_args: dict[str, Any]) -> int:
        from greenpipe.recipes.segment.models import multiple

        return multiple(model_args)

    def evaluate(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        data_root: Path,
        max_side: int = 0,
        multiple: int = 32,
        outputs: dict[str, np.ndarray] | None = None,
    ) -> Evaluation:
        """Per-class IoU, mIoU, pixel accuracy of ``run`` (logits) over every val image.

        One confusion matrix over all val pixels (scikit-learn's ``confusion_matrix``, label 255 left out);
        ``outputs`` gets each image's class probabilities (K, H, W) by name. ``max_side`` is not used:
        images are scored whole. Scoring needs no torch (a device host without it can score an artifact).
        """
        from sklearn.metrics import confusion_matrix

        classes = classes_of(Path(data_root))
        matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
        rows = []
        for s in split_samples(Path(data_root), "val"):
            img, label = s.load()
            h, w = label.shape
            logits = run(to_input(img, multiple))[0, :, :h, :w]
            pred = logits.argmax(0)
            if outputs is not None:
                outputs[s.name] = softmax(logits)
            valid = label != IGNORE
            if valid.any():  # an image labelled ignore everywhere adds nothing
                matrix += confusion_matrix(label[valid], pred[valid], labels=np.arange(len(classes)))
            rows.append({"name": s.name, "pixel_acc": float((pred[valid] == label[valid]).mean()) if valid.any()
                         else float("nan")})
        found = scores(matrix)
        per_class = {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, found["per_class_iou"])}
        quality = Quality.of(self.metrics, found, len(rows))
        return Evaluation(quality, rows, {"per_class_iou": per_class,
                                          "confusion": matrix.tolist()})

    def write_samples(self, outputs: Mapping[str, np.ndarray], out_dir: Path, count: int) -> list[Path]:
        """The first ``count`` predictions (by name) as colour maps (PNG, the class palette)."""
        return write_sample_images(outputs, out_dir, count, lambda probs: colour(probs.argmax(0), PALETTE))

    def references(self, metrics: Path) -> list[Reference]:
        """The float models after training (``segment/train_<net>.json``)."""
        from greenpipe.io import read_json

        refs = []
        for path in sorted((metrics / "segment").glob("train_*.json")):
            net = path.stem[len("train_"):]
            train = read_json(path)
            refs.append(Reference(f"{net} float (PyTorch, after training)",
                                  {"miou": train["val_miou"], "pixel_acc": train["val_pixel_acc"]},
                                  f"metrics/segment/{path.name} (float model, whole val images)", "tab:green"))
        return refs

    def report_markdown(self, metrics: Path) -> str:
        """Every variant of every network at each test scale, from the ``segment_eval`` stages: the deploy
        table above has only the ``segment.deploy`` variants; this one has all of ``segment.quantize``."""
        from greenpipe.io import read_json
        from greenpipe.recipes.segment.evaluate import scales_note, scales_rows

        rows, files = [], []
        for stage in sorted((metrics / "segment").glob("eval_*.json")):
            net = stage.stem[len("eval_"):]
            for variant in read_json(stage).get("variants", {}):
                path = metrics / "segment" / net / f"{variant}.json"
                if path.exists():
                    rows.append(read_json(path))
                    files.append(f"metrics/segment/{net}/{variant}.json")
        if not rows:
            return ""
        hosts = list(dict.fromkeys(str(r.get("host", "the host its source names")) for r in rows))
        keys = [f"[e{k + 1}]" for k in range(len(rows))]
        where = [f"- {key} measured on {row.get('host', 'the host its source names')}, ONNX Runtime, the compiled "
                 f"artifact{' (bf16 emulated)' if 'bf16 emulated' in str(row.get('source')) else ''}: {path} "
                 "(its `source` says how)" for key, row, path in zip(keys, rows, files)]
        return "\n".join(["### Every variant at each test scale (segment_eval)", "", *scales_rows(rows, keys), "",
                          scales_note(" and ".join(hosts)), "",
                          "Where the figures of this table come from:", "", *where, "",
                          "Per-class IoU bars and prediction overlays: reports/segment/<model>/.", ""])

    def bench_input(self, model_args: dict[str, Any], input_size: int) -> tuple[int, ...]:
        """One ``1 x 3 x N x 2N`` street image (the Cityscapes aspect), N = ``deploy.input_size``."""
        return (1, 3, input_size, 2 * input_size)

    def training(self, params: Params, data_root: Path, net: str = "unet") -> Any:
        """Random crops of the train split for network ``net`` (a key of ``segment.models``), cross-entropy."""
        from greenpipe.recipes.segment.training import SegmentTraining

        return SegmentTraining(params.recipe_section(self.name), Path(data_root), net)


RECIPES.register("segment")(SegmentRecipe())
