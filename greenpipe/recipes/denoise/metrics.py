"""The denoise recipe's image-quality scores. Images are float arrays in [0, 1], shape (H, W, C)."""

from __future__ import annotations

import numpy as np


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for a peak of 1.0 (inf when identical)."""
    mse = float(np.mean((reference.astype(np.float64) - estimate.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def ssim(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Structural similarity (scikit-image, Gaussian window as in Wang et al. 2004)."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            reference, estimate, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
    )
