"""Tiny on-disk workspaces for stage tests: a prepared dataset and a checkpoint.

Real files in the layouts the stages read (greenpipe/data/prepared.py, the
self-describing checkpoint), made from scikit-image's bundled photographs so
the content is natural-image-like, at sizes that keep tests fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from greenpipe.io import write_image, write_json
from greenpipe.models.unet import UNet, UNetConfig

TINY_MODEL_ARGS = {"in_channels": 3, "width": 4, "depth": 2}


def _photo(k: int, size: int) -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    src = [data.astronaut, data.chelsea, data.coffee, data.rocket][k % 4]()
    h, w = src.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = resize(src[top : top + side, left : left + side], (size, size), anti_aliasing=True)
    return img.astype(np.float32)


def make_prepared(root: Path, n_train: int = 3, n_val: int = 2, size: int = 48, sigma: float = 0.08) -> Path:
    """Write a prepared dataset (Gaussian noise: these are plumbing tests, not noise tests)."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n_train + n_val):
        split = "train" if k < n_train else "val"
        name = f"img{k}"
        clean = _photo(k, size)
        noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 1).astype(np.float32)
        write_image(root / split / "clean" / f"{name}.png", clean)
        write_image(root / split / "noisy" / f"{name}.png", noisy)
        rows.append({"name": name, "split": split, "group": name, "height": size, "width": size, "noise": None})
    write_json(root / "manifest.json", {"layout": "test", "samples": rows})
    return root


def make_checkpoint(model_dir: Path, model_args: dict = TINY_MODEL_ARGS, seed: int = 0) -> Path:
    """A self-describing checkpoint of an untrained tiny UNet."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(**model_args))
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "checkpoint.pt"
    torch.save({"recipe": "denoise", "model_args": dict(model_args), "state_dict": model.state_dict(),
                "data_fingerprint": "test"}, path)
    return path


TINY_PARAMS_OVERRIDES = {
    "ingest": {"max_side": 96, "val_sources": []},
    "validate": {"min_side": 32, "min_train": 1},
    "train": {"width": 4, "depth": 2, "epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "crop": 32,
              "val_max_side": 64, "dead_leaves_images": 2},
    "calib_dump": {"samples": 4, "crop": 32},
    "baseline": {"max_side": 32},
    "deploy": {"input_size": 32, "single_stream_s": 0.3, "offline_s": 0.3, "repeats": 2, "self_ensemble_repeats": 2},
    "soak": {"idle_s": 0.5, "warmup_s": 0.5, "duration_s": 2, "window_s": 1, "overhead_pairs": 0},
    "video": {
        "data": {"val_sources": ["coffee", "chelsea", "flower"], "train_clips_per_class": 1,
                 "val_clips_per_class": 1},
        "model": {"width_mult": 0.25, "input_size": 32, "n_frames": 4, "last_channel": 32},
        "train": {"steps": 2, "batch_clips": 2, "eval_every": 1},
        "calib": {"clips": 2},
        "quantize": {"tflite_fp32": {}, "tflite_int8": {}},
        "eval": {"smooth_window": 3, "fps_frames": 8, "warmup_frames": 2},
    },
    "segment": {
        "data": {"size": [64, 128], "train_scenes": 4, "val_scenes": 2},
        "models": {"unet": {"arch": "unet", "width": 4, "depth": 2}, "hrnet": {"arch": "hrnet", "width": "tiny"}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "crop": [64, 64]},
        "calib_samples": 2,
        "eval": {"latency_sizes": [[64, 128], [128, 256]]},
    },
    # builtin data tiled at 1024 px (about 15 tiles of the deepforest images), 32 px models
    "detect": {
        "data": {"tile": 1024, "input_size": 32, "val_fraction": 0.2},
        "models": {"vgg": {"backbone": "vgg", "width": 4}, "mobilenet": {"backbone": "mobilenet", "width": 4}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2},
        "calib_samples": 2,
        "eval": {"latency_s": 0.2, "repeats": 2},
    },
    "prune": {"gate_steps": 2, "util_batches": 1, "finetune_steps": 2},
}


def tiny_params(base: dict) -> dict:
    """``base`` (a loaded params.yaml) with the tiny overrides merged in."""
    import copy

    out = copy.deepcopy(base)
    for section, values in TINY_PARAMS_OVERRIDES.items():
        out.setdefault(section, {})
        for k, v in values.items():
            out[section][k] = v
    return out
