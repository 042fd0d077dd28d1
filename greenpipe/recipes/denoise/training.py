"""What the shared trainer (greenpipe/train.py) needs from the denoise recipe: crops, noise, loss.

Random aligned crops with flips / 90-degree rotations, L1 loss (``train.loss``:
plain, or each crop's relative to its noise level).  With ``train.fresh_noise``
every crop of an image whose noise ingest synthesised gets a new camera-noise
draw (as in Brooks et al.), so the model sees thousands of cameras and noise
levels rather than the few stored realisations.  With ``train.dead_leaves`` > 0
that share of the crops is cut from synthetic dead-leaves images
(greenpipe.data.dead_leaves) with fresh noise, so the model learns that sharp
colour detail is signal.  The QAT variants (greenpipe/quant/qat8.py, vitis.py)
draw their crops with :func:`random_batch` too.

This module imports torch; the recipe package itself does not.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from greenpipe.data.dead_leaves import dead_leaves
from greenpipe.data.noise import synthesize_pair
from greenpipe.data.prepared import load_split
from greenpipe.errors import DataError
from greenpipe.io import read_json
from greenpipe.params import NoiseParams, Params


def data_fingerprint(data: Path) -> str:
    """sha256 over the prepared manifest and every image's bytes."""
    h = hashlib.sha256((data / "manifest.json").read_bytes())
    for path in sorted(data.glob("*/*/*.png")):
        h.update(str(path.relative_to(data)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def fresh_noise(clean: np.ndarray, rng: np.random.Generator, noise: NoiseParams) -> np.ndarray:
    """A new camera-noise realisation on a clean (H, W, 3) crop, H and W even.

    The noise is drawn exactly as ingest draws it (a random camera, shot and
    read level; greenpipe.data.noise) and added as the residual between the
    noisy and noise-free re-processing, so the target stays the stored clean
    image and train targets match val targets.
    """
    ref, noisy, _ = synthesize_pair(clean, rng, noise.shot, noise.read)
    return np.clip(clean + (noisy - ref), 0.0, 1.0)


def random_batch(
    pairs: list[tuple[np.ndarray, np.ndarray, bool]],
    rng: np.random.Generator,
    batch: int,
    crop: int,
    noise: NoiseParams | None = None,
    tint: bool = False,
    leaves: list[np.ndarray] | None = None,
    leaves_share: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random aligned crops with flips / rot90 -> (noisy, clean), each (B, 3, crop, crop), channels-last.

    ``pairs`` holds (clean, noisy, synthetic); with ``noise`` given, synthetic
    samples get their channels permuted (and with ``tint`` scaled by random
    per-channel gains) and a fresh noise draw per crop instead of their stored
    noise.  With ``leaves`` (clean dead-leaves images) and ``noise`` given, each
    crop comes from one of them with probability ``leaves_share``, as a
    synthetic sample.
    """
    noisy_b, clean_b = [], []
    for _ in range(batch):
        if leaves and noise is not None and rng.random() < leaves_share:
            leaf = leaves[rng.integers(len(leaves))]
            clean, noisy, synthetic = leaf, leaf, True
        else:
            clean, noisy, synthetic = pairs[rng.integers(len(pairs))]
        h, w = clean.shape[:2]
        top, left = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        c = clean[top : top + crop, left : left + crop]
        if noise is not None and synthetic:
            # Colour diversity a handful of photos lacks: permute the channels of the
            # target before the noise is drawn on it (noise follows the new colours).
            c = np.ascontiguousarray(c[..., rng.permutation(3)])
            if tint:  # grey sources (half the built-in set) would otherwise never show colour
                c = (c * rng.uniform(0.6, 1.0, 3)).astype(np.float32)
            n = fresh_noise(c, rng, noise)
        else:
            n = noisy[top : top + crop, left : left + crop]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        c, n = np.rot90(c, k), np.rot90(n, k)
        if flip:
            c, n = c[:, ::-1], n[:, ::-1]
        clean_b.append(c.transpose(2, 0, 1))
        noisy_b.append(n.transpose(2, 0, 1))
    # channels-last is oneDNN's fast layout for these convolutions on CPU (~1.4x per step here).
    return tuple(
        torch.from_numpy(np.stack(b).copy()).contiguous(memory_format=torch.channels_last)
        for b in (noisy_b, clean_b)
    )


def pixel_loss(denoised: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor, kind: str) -> torch.Tensor:
    """The training loss ``train.loss`` over a batch of (B, 3, H, W) crops.

    ``l1`` is the mean absolute error.  ``l1_relative`` divides each crop's
    L1 by its input noise's mean magnitude, then rescales by the batch's mean
    magnitude (so the loss, and the learning rate, stay on the L1 scale):
    otherwise the heavy-noise crops, whose errors are several times larger,
    drive the gradients and light-noise inputs are over-smoothed, although
    the score (mean PSNR over images) weighs every image alike.
    """
    err = (denoised - clean).abs().mean((1, 2, 3))
    if kind == "l1":
        return err.mean()
    level = (noisy - clean).abs().mean((1, 2, 3)) + 1e-3  # 1e-3: a noise-free crop must not dominate
    return (err / level).mean() * level.mean()


def leaf_images(params: Params) -> list[np.ndarray]:
    """The run's ``train.dead_leaves_images`` dead-leaves images (side 2 * crop), the same for the same seed."""
    tp = params.train
    rng = np.random.default_rng([params.base.seed, 1])  # its own stream: the crops' stream is unchanged
    t0 = time.perf_counter()
    images = [dead_leaves(rng, 2 * tp.crop) for _ in range(tp.dead_leaves_images)]
    print(f"train: {len(images)} dead-leaves images of {2 * tp.crop} px drawn in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return images


class DenoiseTraining:
    """The UNet's training task on a prepared dataset: model args, random crop batches, the pixel loss."""

    def __init__(self, params: Params, data: Path):
        tp = self.tp = params.train
        self.model_args: dict[str, Any] = {"in_channels": 3, "width": tp.width, "depth": tp.depth}
        synthetic = {row["name"] for row in read_json(data / "manifest.json")["samples"] if row.get("noise")}
        split = load_split(data, "train")
        self.pairs = [(*p.load(), p.name in synthetic) for p in split]
        too_small = [p for p, (c, *_) in zip(split, self.pairs) if min(c.shape[:2]) < tp.crop]
        if too_small:
            raise DataError(
                f"{too_small[0].clean}: {too_small[0].clean.name} is smaller than train.crop={tp.crop}; "
                "lower train.crop or drop the image"
            )
        self.data_fingerprint = data_fingerprint(data)
        self.noise = params.ingest.noise if tp.fresh_noise else None
        self.leaves = leaf_images(params) if tp.dead_leaves and self.noise is not None else None

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy inputs, clean targets), each (train.batch_size, 3, train.crop, train.crop)."""
        tp = self.tp
        return random_batch(self.pairs, rng, tp.batch_size, tp.crop, self.noise, tp.tint,
                            self.leaves, tp.dead_leaves)

    def loss(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``train.loss`` of the denoised ``outputs`` against the batch's clean targets."""
        noisy, clean = batch
        return pixel_loss(outputs, clean, noisy, self.tp.loss)
