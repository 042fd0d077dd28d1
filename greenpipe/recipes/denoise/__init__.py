"""Recipe ``denoise``: residual UNet image denoiser scored by PSNR / SSIM.

Pipeline boundary: the model input (the whole UNet is one DPU kernel).
Pre-processing: HWC [0, 1] -> NCHW float32, reflect-padded to a multiple of
``2**depth``; post-processing crops the padding away and clips to [0, 1].
Training (crops, fresh camera noise, dead leaves, the pixel loss) is in
:mod:`greenpipe.recipes.denoise.training`.  Importing this module does not
import torch (only ``build_model``, ``multiple`` and ``training`` do), so a
device host scores an artifact with numpy alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenpipe.data.prepared import center_crop, load_split
from greenpipe.recipes.base import RECIPES, Evaluation, Metric, OneKernelRecipe, Quality, Reference, write_sample_images
from greenpipe.recipes.denoise.metrics import psnr, ssim
from greenpipe.recipes.denoise.validate import DenoiseValidateParams

SAMPLE_CROP = 256  # px: side of the sample crops the report shows

if TYPE_CHECKING:  # the model (torch) is imported where it is built, so that evaluating a deployed
    from torch import nn  # artifact (a device host running flows/device_run.py) never loads torch

    from greenpipe.calib import CalibrationSamples
    from greenpipe.params import Params
    from greenpipe.recipes.denoise.training import DenoiseTraining


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (N, C, H, W) so H, W are multiples of ``multiple``; return (padded, (H, W))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
    return x, (h, w)


def to_nchw(img: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (1, C, H, W) float32."""
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def to_hwc(x: np.ndarray) -> np.ndarray:
    """(1, C, H, W) -> (H, W, C) clipped to [0, 1]."""
    return np.clip(x[0].transpose(1, 2, 0), 0.0, 1.0)


def denoise_image(run: Callable[[np.ndarray], np.ndarray], noisy: np.ndarray, multiple: int) -> np.ndarray:
    """Denoise one (H, W, 3) image of any size with ``run`` on a padded NCHW batch."""
    x, (h, w) = pad_to_multiple(to_nchw(noisy), multiple)
    return to_hwc(run(x)[..., :h, :w])


def tile_step(tile: int, context: int, multiple: int) -> int:
    """The stride between ``tile``-px tiles that carry ``context`` px on every side (a multiple of ``multiple``).

    Raises GreenpipeError when ``tile`` leaves no room for a kept centre: the
    tiles would then advance by nothing (or by 1 px, one model run per pixel).
    """
    from greenpipe.errors import GreenpipeError

    step = (tile - 2 * context) // multiple * multiple
    if step <= 0:
        smallest = 2 * context + multiple
        raise GreenpipeError(
            f"--tile {tile}: too small for this model: each tile carries {context} px of context on every side "
            f"(the model's receptive field) and keeps a centre that is a multiple of {multiple} px, so a tile "
            f"is at least {smallest} px; pass --tile {smallest} or more, or --tile 0 for whole images")
    return step


def _as_unit(a: np.ndarray) -> np.ndarray:
    """A tile of any sample type as float32 in [0, 1] (integers scaled by their type's maximum)."""
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max)
    return a.astype(np.float32)


def from_unit(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float in [0, 1] as ``dtype`` (integers: the nearest of their full range's levels)."""
    if np.issubdtype(dtype, np.integer):
        return np.round(a * np.float32(np.iinfo(dtype).max)).astype(dtype)
    return a.astype(dtype)


def denoise_bands(
    run: Callable[[np.ndarray], np.ndarray], img: np.ndarray, tile: int = 512, context: int = 64, multiple: int = 64,
) -> Iterator[np.ndarray]:
    """Denoise an (H, W, 3) RGB image of any size in overlapping tiles; yield the result top to bottom.

    ``img`` is float in [0, 1] or uint8 / uint16 (full range); it may be a
    strided view (BGR order reversed, a gray plane broadcast to 3 channels).
    Each band is (rows, W, 3) float32 in [0, 1], one row of tiles; only one
    tile at a time is converted to float32, so a caller that writes each band
    out holds the image, one band and one tile.  Each tile carries
    ``context`` px on every side and only its centre is kept; with
    ``context`` >= the model's reach and tiles aligned to ``multiple`` the
    result equals a whole-image pass.  ``tile`` = 0, or an image no larger
    than ``tile``, runs in one pass (one band).
    """
    h, w = img.shape[:2]
    step = max(h, w) if tile <= 0 or max(h, w) <= tile else tile_step(tile, context, multiple)
    for top in range(0, h, step):
        bottom = min(top + step, h)
        band = np.empty((bottom - top, w, 3), np.float32)
        for left in range(0, w, step):
            right = min(left + step, w)
            y0, x0 = max(top - context, 0), max(left - context, 0)
            y1, x1 = min(bottom + context, h), min(right + context, w)
            res = denoise_image(run, _as_unit(img[y0:y1, x0:x1]), multiple)
            band[:, left:right] = res[top - y0 : bottom - y0, left - x0 : right - x0]
        yield band


def denoise_tiled(
    run: Callable[[np.ndarray], np.ndarray], img: np.ndarray, tile: int = 512, context: int = 64, multiple: int = 64,
) -> np.ndarray:
    """:func:`denoise_bands` gathered into one (H, W, 3) image of ``img``'s sample type."""
    out = np.empty((*img.shape[:2], 3), img.dtype)
    top = 0
    for band in denoise_bands(run, img, tile, context, multiple):
        out[top : top + len(band)] = from_unit(band, img.dtype)
        top += len(band)
    return out


def calibration_crops(data_root: Path, count: int, crop: int,
                      rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` random crops of noisy *train* images as (source, model input (1, 3, crop, crop))."""
    pairs = load_split(data_root, "train")
    images = {}
    for _ in range(count):
        pair = pairs[int(rng.integers(len(pairs)))]
        if pair.name not in images:
            images[pair.name] = pair.load()[1]
        noisy = images[pair.name]
        h, w = noisy.shape[:2]
        c = min(crop, h, w)
        top, left = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        yield f"{pair.name}@{top},{left}+{c}", to_nchw(noisy[top : top + c, left : left + c])


class DenoiseRecipe(OneKernelRecipe):
    name = "denoise"
    self_ensemble = True  # flips / rotations of an image denoise alike: their mean is a better estimate
    validate_params = DenoiseValidateParams
    metrics = (
        Metric("psnr", "PSNR", "dB", higher_is_better=True, lo=0.0, hi=100.0, fmt=".2f"),
        Metric("ssim", "SSIM", "", higher_is_better=True, lo=-1.0, hi=1.0, fmt=".4f"),
        # The noisy input's PSNR: a property of the val data, the same for every model.
        Metric("noisy_psnr", "noisy-input PSNR", "dB", higher_is_better=True, lo=0.0, hi=100.0, fmt=".2f",
               column=False),
    )

    def build_model(self, model_args: dict[str, Any]) -> nn.Module:
        from greenpipe.models.unet import UNet, UNetConfig

        return UNet(UNetConfig(**model_args))

    def boundaries(self, model: nn.Module) -> dict[str, nn.Module | None]:
        return {"input": None}

    def calibration_samples(self, model_dir: Path, data_root: Path, params: Params,
                            rng: np.random.Generator) -> CalibrationSamples:
        """The input of every boundary over ``calib_dump.samples`` random crops of noisy train images.

        Crops are ``calib_dump.crop`` px (less where an image is smaller); the float
        model of ``model_dir/checkpoint.pt`` runs on each, hooked at its boundaries.
        """
        from greenpipe.recipes.denoise.calib import calibration

        cp = params.calib_dump
        crops = calibration_crops(data_root, cp.samples, cp.crop, rng)
        return calibration(self, Path(model_dir) / "checkpoint.pt", crops, cp.samples, params.base.threads)

    def multiple(self, model_args: dict[str, Any]) -> int:
        from greenpipe.models.unet import UNetConfig

        return UNetConfig(**model_args).multiple

    def evaluate(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        data_root: Path,
        max_side: int = 0,
        multiple: int = 8,
        outputs: dict[str, np.ndarray] | None = None,
    ) -> Evaluation:
        """PSNR (dB) / SSIM of ``run`` on every val image, and the noisy input's PSNR; per-image rows.

        When ``outputs`` is a dict, each denoised (H, W, 3) image in [0, 1] is stored in it by name.
        """
        rows = []
        for pair in load_split(data_root, "val"):
            clean, noisy = (center_crop(a, max_side) for a in pair.load())
            out = denoise_image(run, noisy, multiple)
            if outputs is not None:
                outputs[pair.name] = out
            rows.append(
                {
                    "name": pair.name,
                    "psnr": psnr(clean, out),
                    "ssim": ssim(clean, out),
                    "noisy_psnr": psnr(clean, noisy),
                }
            )
        means = {m.name: float(np.mean([r[m.name] for r in rows])) for m in self.metrics}
        return Evaluation(Quality.of(self.metrics, means, len(rows)), rows)

    def write_samples(self, outputs: Mapping[str, np.ndarray], out_dir: Path, count: int) -> list[Path]:
        """The first ``count`` denoised val images (by name), centre-cropped to 256 px, as PNG."""
        return write_sample_images(outputs, out_dir, count, lambda image: center_crop(image, SAMPLE_CROP))

    def references(self, metrics: Path) -> list[Reference]:
        """The noisy input and the classical denoisers (``baseline.json``), the float UNet (``train.json``)."""
        from greenpipe.io import read_json

        refs = []
        if (metrics / "baseline.json").exists():
            base = read_json(metrics / "baseline.json")
            src = "metrics/baseline.json (scikit-image, tuned on train crops, whole val images)"
            if base.get("noisy_psnr") is not None:
                refs.append(Reference("noisy input (no denoising)", {"psnr": base["noisy_psnr"]}, src, "lightgray"))
            for name, label in (("nlm", "non-local means"), ("wavelet", "wavelet (BayesShrink)")):
                if name in base:
                    refs.append(Reference(f"{label}, tuned on train",
                                          {"psnr": base[name]["psnr"], "ssim": base[name]["ssim"]}, src))
        if (metrics / "train.json").exists():
            train = read_json(metrics / "train.json")
            if train.get("val_psnr") is not None:
                refs.append(Reference("UNet float (PyTorch, after training)",
                                      {"psnr": train["val_psnr"], "ssim": train.get("val_ssim")},
                                      "metrics/train.json (float model, whole val images)", "tab:green"))
        return refs

    def bench_input(self, model_args: dict[str, Any], input_size: int) -> tuple[int, ...]:
        """One ``1 x C x N x N`` image, N = ``deploy.input_size``."""
        return (1, int(model_args.get("in_channels", 3)), input_size, input_size)

    def training(self, params: Params, data_root: Path) -> DenoiseTraining:
        """Random crops of the train split (fresh noise, dead leaves per ``train``) and the pixel loss."""
        from greenpipe.recipes.denoise.training import DenoiseTraining

        return DenoiseTraining(params, data_root)


RECIPES.register("denoise")(DenoiseRecipe())
