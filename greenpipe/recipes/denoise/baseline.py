"""The denoise recipe's classical baseline: the best classical denoisers, tuned for the same noise.

The ``baseline`` stage (``python -m tasks.baseline``) runs :func:`baseline`.
Non-local means and wavelet shrinkage from scikit-image.  Each method's
strength is tuned on crops of the *train* split (grid search, best mean PSNR)
and then scored on the whole val images, so the comparison with the UNet is
on the same images with no peeking at val.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from skimage.restoration import denoise_nl_means, denoise_wavelet, estimate_sigma

from greenpipe.data.prepared import center_crop, load_split
from greenpipe.params import Params
from greenpipe.recipes.denoise.metrics import psnr, ssim


def _nlm(strength: float) -> Callable[[np.ndarray], np.ndarray]:
    def run(noisy: np.ndarray) -> np.ndarray:
        sigma = float(np.mean(estimate_sigma(noisy, channel_axis=-1)))
        return denoise_nl_means(noisy, h=strength * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                fast_mode=True, channel_axis=-1)

    return run


def _wavelet(strength: float) -> Callable[[np.ndarray], np.ndarray]:
    def run(noisy: np.ndarray) -> np.ndarray:
        sigma = float(np.mean(estimate_sigma(noisy, channel_axis=-1)))
        return denoise_wavelet(noisy, sigma=strength * sigma, method="BayesShrink", mode="soft",
                               wavelet="db2", convert2ycbcr=True, channel_axis=-1, rescale_sigma=True)

    return run


# Strength = multiplier on the noise sigma estimated from the image.  The grid
# is wide and geometric because wavelet sigma estimates badly under-read
# demosaicked (spatially correlated) camera noise.
_GRID = tuple(round(1.5**k, 3) for k in range(-1, 8))  # 0.67 .. 17
METHODS: dict[str, tuple[Callable[[float], Callable], tuple[float, ...]]] = {
    "nlm": (_nlm, _GRID),
    "wavelet": (_wavelet, _GRID),
}


def baseline(params: Params, data: Path) -> dict:
    """Tune each classical method on train crops, score it on val; return metrics."""
    bp = params.baseline
    train = [p.load() for p in load_split(data, "train")][:: max(1, len(load_split(data, "train")) // 6)]
    tune = [(center_crop(c, bp.max_side), center_crop(n, bp.max_side)) for c, n in train]
    val = [(p.name, *p.load()) for p in load_split(data, "val")]
    out: dict = {"source": "scikit-image on the whole val images (measured); strength tuned on train crops"}
    for name in bp.methods:
        if name not in METHODS:
            continue
        make, grid = METHODS[name]
        t0 = time.perf_counter()
        scores = {s: float(np.mean([psnr(c, np.clip(make(s)(n), 0, 1)) for c, n in tune])) for s in grid}
        best = max(scores, key=scores.get)
        rows = []
        for img_name, clean, noisy in val:
            den = np.clip(make(best)(noisy), 0, 1)
            rows.append({"name": img_name, "psnr": psnr(clean, den), "ssim": ssim(clean, den)})
        out[name] = {
            "psnr": float(np.mean([r["psnr"] for r in rows])),
            "ssim": float(np.mean([r["ssim"] for r in rows])),
            "strength": best,
            "tuning": scores,
            "per_image": rows,
            "wall_s": time.perf_counter() - t0,
        }
    out["noisy_psnr"] = float(np.mean([psnr(c, n) for _, c, n in val]))
    return out
