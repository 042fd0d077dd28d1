"""What the shared trainer (greenpipe/train.py) needs from the segment recipe: crops and the loss.

Random aligned image / label crops (``segment.train.crop``, H x W) with
horizontal flips; pixel-wise cross-entropy ignoring label 255.  The network is
``segment.models.<net>``; its ``checkpoint`` (a state dict or a greenpipe
checkpoint of the same architecture) gives the starting weights.  Imports torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from greenpipe.errors import DataError, ParamsError
from greenpipe.recipes.segment.data import IGNORE, classes_of, split_samples
from greenpipe.recipes.segment.models import hrnet_config
from greenpipe.recipes.segment.params import SegmentModelParams, SegmentParams


def model_args(model: SegmentModelParams, num_classes: int, key: str) -> dict[str, Any]:
    """What ``Recipe.build_model`` takes for ``segment.models.<key>``."""
    if model.arch == "unet":
        if not isinstance(model.width, int):
            raise ParamsError(f"segment.models.{key}.width = {model.width!r}: a UNet width is a channel count")
        return {"arch": "unet", "num_classes": num_classes, "width": model.width, "depth": model.depth}
    return {"arch": "hrnet", **hrnet_config(str(model.width), num_classes).to_dict()}


def initial_weights(path: str, key: str) -> dict | None:
    """The state dict in ``path`` (a bare one, or a greenpipe checkpoint's), or None for ``""``."""
    if not path:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ParamsError(f"segment.models.{key}.checkpoint = {path!r}: cannot be read ({exc}); "
                          "give a .pt state dict of this architecture, or \"\" to train from scratch") from None
    return state.get("state_dict", state)


class SegmentTraining:
    """One network's training task on a prepared segment dataset."""

    def __init__(self, sp: SegmentParams, data: Path, net: str):
        if net not in sp.models:
            raise ParamsError(f"--net {net}: not in segment.models (params.yaml has: {', '.join(sp.models)})")
        self.train_params = sp.train
        self.classes = classes_of(data)
        self.model_args = model_args(sp.models[net], len(self.classes), net)
        self.initial_weights = initial_weights(sp.models[net].checkpoint, net)
        samples = split_samples(data, "train")
        self.pairs = [s.load() for s in samples]
        ch, cw = sp.train.crop
        small = [s for s, (img, _) in zip(samples, self.pairs) if img.shape[0] < ch or img.shape[1] < cw]
        if small:
            raise DataError(f"{small[0].image}: smaller than segment.train.crop = {list(sp.train.crop)}; "
                            "lower the crop or segment.data.size")
        h = hashlib.sha256((data / "manifest.json").read_bytes())
        for s in samples:
            h.update(s.image.read_bytes() + s.label.read_bytes())
        self.data_fingerprint = h.hexdigest()

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 3, h, w) channels-last, labels (B, h, w) int64), B = segment.train.batch_size."""
        ch, cw = self.train_params.crop
        xs, ys = [], []
        for _ in range(self.train_params.batch_size):
            img, label = self.pairs[int(rng.integers(len(self.pairs)))]
            top, left = int(rng.integers(img.shape[0] - ch + 1)), int(rng.integers(img.shape[1] - cw + 1))
            x, y = img[top : top + ch, left : left + cw], label[top : top + ch, left : left + cw]
            if rng.integers(2):
                x, y = x[:, ::-1], y[:, ::-1]
            xs.append(x.transpose(2, 0, 1))
            ys.append(y)
        x = torch.from_numpy(np.stack(xs).astype(np.float32)).contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(np.stack(ys).astype(np.int64))

    def loss(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the labelled pixels."""
        return F.cross_entropy(outputs, batch[1], ignore_index=IGNORE)
