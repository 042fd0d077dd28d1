"""The detect training task: random batches of resized images with matched prior targets, multibox loss.

It keeps the :class:`greenpipe.recipes.base.TrainingTask` contract (``model_args``,
``data_fingerprint``, ``batch(rng)``, ``loss``). Images are decoded once and held at the model's
input size (3 x S x S float32 each: 196 KB at 128 px); a batch draws images with replacement and
flips each left-right with probability 1/2, then matches its boxes to the priors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from greenpipe.recipes.detect.boxes import match
from greenpipe.errors import ParamsError
from greenpipe.io import read_json
from greenpipe.recipes.detect.data import DetectionSet, load, load_image, normalised
from greenpipe.recipes.detect.loss import multibox_loss
from greenpipe.recipes.detect.model import SSDConfig


def fingerprint(data: DetectionSet) -> str:
    """sha256 (16 hex) of the class list and every sample's id, image name, boxes and classes."""
    h = hashlib.sha256(repr(data.classes).encode())
    for s in data.samples:
        h.update(f"{s.id}|{s.image.name}|{s.names}".encode())
        h.update(np.ascontiguousarray(s.boxes, np.float64).tobytes())
    return h.hexdigest()[:16]


class DetectTraining:
    def __init__(self, data: DetectionSet, cfg: SSDConfig, batch_size: int = 8, train_params: Any = None):
        if cfg.num_classes != len(data.classes):
            raise ValueError(f"model has {cfg.num_classes} classes, data {len(data.classes)} ({data.classes})")
        self.model_args = cfg.to_dict()
        self.data_fingerprint = fingerprint(data)
        self.batch_size = batch_size
        self.train_params = train_params  # the shared trainer's settings (detect.train); None: params.train
        self.priors = cfg.priors()
        self.images = np.stack([load_image(s.image, cfg.input_size) for s in data.samples])  # (N, 3, S, S)
        self.boxes = [normalised(s) for s in data.samples]
        self.labels = [data.labels(s) for s in data.samples]

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(images (B, 3, S, S), loc targets (B, P, 4), classes (B, P))."""
        idx = rng.integers(0, len(self.images), self.batch_size)
        flip = rng.random(self.batch_size) < 0.5
        images, locs, classes = [], [], []
        for i, f in zip(idx, flip):
            img, boxes = self.images[i], self.boxes[i]
            if f:
                img = img[:, :, ::-1]
                boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
            loc, cls = match(boxes, self.labels[i], self.priors)
            images.append(img)
            locs.append(loc)
            classes.append(cls)
        return (torch.from_numpy(np.ascontiguousarray(np.stack(images))), torch.from_numpy(np.stack(locs)),
                torch.from_numpy(np.stack(classes)))

    def loss(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return multibox_loss(outputs, batch[1], batch[2])


def task_for(sp: Any, data: Path, net: str) -> DetectTraining:
    """The training task of ``detect.models.<net>`` on the ingest stage's ``train/`` split under ``data``."""
    if net not in sp.models:
        raise ParamsError(f"--net {net}: not in detect.models (params.yaml has: {', '.join(sp.models)})")
    manifest = read_json(Path(data) / "manifest.json")
    train = load(Path(data) / "train", "voc", tuple(manifest["classes"]))
    m = sp.models[net]
    cfg = SSDConfig(num_classes=len(train.classes), backbone=m.backbone, width=m.width,
                    input_size=int(manifest["input_size"]))
    return DetectTraining(train, cfg, sp.train.batch_size, sp.train)
