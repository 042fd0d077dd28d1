"""Camera noise model: realistic noisy/clean pairs from clean sRGB photographs.

Follows "Unprocessing Images for Learned Raw Denoising" (Brooks et al., CVPR
2019): a clean sRGB image is walked back through a plausible camera pipeline
to linear raw Bayer data, heteroscedastic sensor noise is added there, and the
result is processed forward to sRGB again::

    sRGB -> inverse tone curve (smoothstep) -> inverse gamma -> sRGB->camera
         -> inverse white balance / brightness gains -> RGGB mosaic
         -> + N(0, shot * x + read)                     (linear raw, x in [0, 1])
         -> gains -> bilinear demosaic -> camera->sRGB -> gamma -> tone curve

Choice of clean target: :func:`synthesize_pair` returns as *clean* the same
mosaic processed forward **without** noise, not the input image.  Clean and
noisy then differ by the noise alone; the mosaic/demosaic round trip and the
highlight clipping are in both, so a model trained on the pair learns to
denoise and is not also asked to undo bilinear demosaicking artefacts.

Everything is a pure function of float32 arrays in [0, 1] and of the numpy
``Generator`` passed in, so a seed gives the same pair on every machine.

Use::

    rng = np.random.default_rng(0)
    clean, noisy, drawn = synthesize_pair(image, rng, shot=(5e-4, 4e-3), read=(5e-5, 8e-4))
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve

# XYZ -> camera matrices of four real cameras, as published with Brooks et al.
# (unprocess.py); a random convex mix of them is a plausible unseen camera.
XYZ2CAMS = np.array(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
    ]
)
# Linear sRGB (D65) -> CIE XYZ.
RGB2XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
GAMMA = 2.2
# Standard deviation (natural-log units) of log(read) around the shot -> read line.
READ_JITTER = 0.26
# Log-uniform draws need a positive lower bound; params allow 0.
_MIN_LEVEL = 1e-8


# --- random camera -----------------------------------------------------------------------------


def random_ccm(rng: np.random.Generator) -> np.ndarray:
    """A random sRGB -> camera colour matrix (3, 3); each row sums to 1 (white stays white)."""
    weights = rng.uniform(1e-8, 1e8, size=(len(XYZ2CAMS), 1, 1))
    xyz2cam = (XYZ2CAMS * weights).sum(axis=0) / weights.sum(axis=0)
    rgb2cam = xyz2cam @ RGB2XYZ
    return rgb2cam / rgb2cam.sum(axis=-1, keepdims=True)


def random_gains(rng: np.random.Generator) -> dict[str, float]:
    """Brightness (``rgb``) and white-balance (``red``, ``blue``) gains, as in Brooks et al.

    The brightness divisor is N(0.8, 0.1), clipped to [0.5, 1.1] so that a
    far-tail draw cannot blow the image up or black it out.
    """
    rgb = 1.0 / float(np.clip(rng.normal(0.8, 0.1), 0.5, 1.1))
    red = float(rng.uniform(1.9, 2.4))
    blue = float(rng.uniform(1.5, 1.9))
    return {"rgb": rgb, "red": red, "blue": blue}


def random_noise_levels(
    rng: np.random.Generator, shot: tuple[float, float], read: tuple[float, float]
) -> tuple[float, float]:
    """(shot, read) noise parameters of one capture, in linear-raw units.

    ``shot`` is log-uniform in the ``shot`` range.  Real sensors raise read
    noise with gain (ISO), so ``read`` follows a log-linear line through the
    range corners (lowest shot -> lowest read, highest -> highest) plus
    N(0, 0.26) jitter in log space (the spread Brooks et al. fit), clipped
    into the ``read`` range.
    """
    s_lo, s_hi = (max(v, _MIN_LEVEL) for v in shot)
    r_lo, r_hi = (max(v, _MIN_LEVEL) for v in read)
    log_shot = rng.uniform(np.log(s_lo), np.log(s_hi))
    log_read = log_read_on_line(log_shot, shot, read) + rng.normal(0.0, READ_JITTER)
    return float(np.exp(log_shot)), float(np.clip(np.exp(log_read), r_lo, r_hi))


def log_read_on_line(log_shot: float, shot: tuple[float, float], read: tuple[float, float]) -> float:
    """log(read) for ``log_shot`` on the log-linear line from (shot lo, read lo) to (shot hi, read hi), no jitter."""
    s_lo, s_hi = (max(v, _MIN_LEVEL) for v in shot)
    r_lo, r_hi = (max(v, _MIN_LEVEL) for v in read)
    t = (log_shot - np.log(s_lo)) / (np.log(s_hi) - np.log(s_lo)) if s_hi > s_lo else 0.5
    return np.log(r_lo) + t * (np.log(r_hi) - np.log(r_lo))


# --- pipeline steps (pure, float32) ------------------------------------------------------------


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Global tone curve 3x^2 - 2x^3 on [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def inverse_smoothstep(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`smoothstep` on [0, 1]."""
    y = np.clip(y, 0.0, 1.0)
    return (0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)).astype(y.dtype)


def gamma_expansion(x: np.ndarray) -> np.ndarray:
    # The floor keeps the power finite and the gradient sane at 0.
    return np.maximum(x, 1e-8) ** GAMMA


def gamma_compression(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 1e-8) ** (1.0 / GAMMA)


def apply_ccm(image: np.ndarray, ccm: np.ndarray) -> np.ndarray:
    """Apply a (3, 3) colour matrix to every pixel of (H, W, 3)."""
    return (image @ ccm.T.astype(image.dtype)).astype(image.dtype)


def safe_invert_gains(image: np.ndarray, gains: dict[str, float]) -> np.ndarray:
    """Undo white balance and brightness on (H, W, 3) without dimming saturated pixels.

    Near white (mean > 0.9) the inverse gain is blended towards 1, as in
    Brooks et al.: a clipped highlight must stay clipped after re-processing
    instead of turning grey or tinted.
    """
    inverse = np.array([1.0 / gains["red"], 1.0, 1.0 / gains["blue"]], dtype=np.float32) / gains["rgb"]
    gray = image.mean(axis=-1, keepdims=True)  # (H, W, 1)
    mask = (np.maximum(gray - 0.9, 0.0) / 0.1) ** 2
    safe = np.maximum(mask + (1.0 - mask) * inverse, inverse)  # (H, W, 3)
    return (image * safe).astype(np.float32)


def mosaic(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> RGGB Bayer planes (H/2, W/2, 4); H and W must be even."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"mosaic needs even height and width, got {h}x{w}")
    return np.stack(
        [image[0::2, 0::2, 0], image[0::2, 1::2, 1], image[1::2, 0::2, 1], image[1::2, 1::2, 2]],
        axis=-1,
    )


_K_GREEN = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32) / 4
_K_RED_BLUE = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4


def demosaic(bayer: np.ndarray) -> np.ndarray:
    """Bilinear demosaic: RGGB planes (h, w, 4) -> (2h, 2w, 3).

    Each colour is scattered onto a full-resolution zero canvas and filled by
    the classic bilinear kernels.  ``mirror`` padding maps a pixel outside the
    border onto one of the same Bayer parity, so the border is filled from the
    right colour.
    """
    h, w, _ = bayer.shape
    canvas = np.zeros((2 * h, 2 * w, 3), dtype=np.float32)  # (H, W, 3), zeros where unsampled
    canvas[0::2, 0::2, 0] = bayer[..., 0]
    canvas[0::2, 1::2, 1] = bayer[..., 1]
    canvas[1::2, 0::2, 1] = bayer[..., 2]
    canvas[1::2, 1::2, 2] = bayer[..., 3]
    kernels = (_K_RED_BLUE, _K_GREEN, _K_RED_BLUE)
    return np.stack([convolve(canvas[..., c], kernels[c], mode="mirror") for c in range(3)], axis=-1)


def apply_gains(bayer: np.ndarray, gains: dict[str, float]) -> np.ndarray:
    """White balance and brightness on RGGB planes (h, w, 4)."""
    per_plane = np.array([gains["red"], 1.0, 1.0, gains["blue"]], dtype=np.float32) * gains["rgb"]
    return (bayer * per_plane).astype(np.float32)


def add_noise(bayer: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Heteroscedastic Gaussian noise on linear raw data: variance = shot * x + read."""
    variance = shot * np.maximum(bayer, 0.0) + read
    return (bayer + rng.standard_normal(bayer.shape, dtype=np.float32) * np.sqrt(variance)).astype(np.float32)


# --- whole pipeline ----------------------------------------------------------------------------


def unprocess(
    image: np.ndarray, cam2rgb: np.ndarray, gains: dict[str, float], tone_curve: bool = True
) -> np.ndarray:
    """sRGB (H, W, 3) in [0, 1] -> linear raw RGGB planes (H/2, W/2, 4) in [0, 1]."""
    x = np.clip(image.astype(np.float32), 0.0, 1.0)
    if tone_curve:
        x = inverse_smoothstep(x)
    x = gamma_expansion(x)
    x = apply_ccm(x, np.linalg.inv(cam2rgb))
    x = safe_invert_gains(x, gains)
    return mosaic(np.clip(x, 0.0, 1.0))


def process(
    bayer: np.ndarray, cam2rgb: np.ndarray, gains: dict[str, float], tone_curve: bool = True
) -> np.ndarray:
    """Linear raw RGGB planes (h, w, 4) -> sRGB (2h, 2w, 3) in [0, 1]."""
    x = np.clip(apply_gains(bayer, gains), 0.0, 1.0)
    x = demosaic(x)
    x = np.clip(apply_ccm(x, cam2rgb), 0.0, 1.0)
    x = gamma_compression(x)
    if tone_curve:
        x = smoothstep(x)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def synthesize_pair(
    image: np.ndarray,
    rng: np.random.Generator,
    shot: tuple[float, float],
    read: tuple[float, float],
    tone_curve: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw a camera and a noise level, return ``(clean, noisy, drawn)``.

    ``image``: float32 (H, W, 3) sRGB in [0, 1], H and W even.  ``clean`` and
    ``noisy`` are float32 (H, W, 3) in [0, 1]: the same unprocessed mosaic
    processed forward without and with noise (see the module docstring).
    ``drawn`` holds what was drawn, JSON-ready: ``shot`` and ``read``
    (linear-raw variance terms), ``cam2rgb`` (3x3 camera -> linear sRGB
    matrix), ``gains`` (``rgb``, ``red``, ``blue``) and ``tone_curve``.
    """
    rgb2cam = random_ccm(rng)
    cam2rgb = np.linalg.inv(rgb2cam)
    gains = random_gains(rng)
    shot_level, read_level = random_noise_levels(rng, shot, read)
    bayer = unprocess(image, cam2rgb, gains, tone_curve)  # (H/2, W/2, 4)
    noisy_bayer = add_noise(bayer, shot_level, read_level, rng)
    clean = process(bayer, cam2rgb, gains, tone_curve)
    noisy = process(noisy_bayer, cam2rgb, gains, tone_curve)
    drawn = {
        "shot": shot_level,
        "read": read_level,
        "cam2rgb": [[round(float(v), 6) for v in row] for row in cam2rgb],
        "gains": {k: round(v, 6) for k, v in gains.items()},
        "tone_curve": tone_curve,
    }
    return clean, noisy, drawn
