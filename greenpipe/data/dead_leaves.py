"""Dead-leaves images: synthetic clean training content for the denoiser.

A dead-leaves image is a stack of opaque discs of random colour whose radii
follow a power law (``p(r) ~ r**-alpha``, alpha = 3 is scale invariant like
natural images), dropped front to back until the canvas is covered.  It has
sharp edges and saturated colour detail at every scale, which a handful of
built-in photographs (half of them grey) shows too rarely: a denoiser trained
on the photographs alone learns that colour detail is noise and removes it.
Mixing dead-leaves crops into training (``train.dead_leaves``) teaches it
otherwise (Achddou et al., "Synthetic images as a regularity prior for image
restoration neural networks", 2021, train denoisers on dead leaves alone).

The image is drawn at ``supersample`` times the size and box-averaged down,
so edges are anti-aliased as a lens would leave them; colours are uniform in
[0.02, 0.98] per channel, raised to 1.5 (more dark and saturated colours).
"""

from __future__ import annotations

import numpy as np

MAX_DISCS = 12000  # a 384 px canvas is covered long before; what is left takes the last disc's colour


def dead_leaves(rng: np.random.Generator, size: int, alpha: float = 3.0, r_min: float = 1.0,
                supersample: int = 2) -> np.ndarray:
    """One (size, size, 3) float32 sRGB dead-leaves image in [0, 1]; ``r_min`` in supersampled pixels."""
    n = size * supersample
    r_max = n / 2
    img = np.zeros((n, n, 3), np.float32)
    free = np.ones((n, n), bool)  # not yet covered by a disc in front
    a, b = r_min ** (1 - alpha), r_max ** (1 - alpha)
    radii = (a - rng.uniform(size=MAX_DISCS) * (a - b)) ** (1 / (1 - alpha))  # inverse CDF of r**-alpha
    centres = rng.uniform(0, n, (MAX_DISCS, 2))
    colours = (rng.uniform(0.02, 0.98, (MAX_DISCS, 3)) ** 1.5).astype(np.float32)
    for r, (cy, cx), colour in zip(radii, centres, colours):
        y0, y1 = int(max(cy - r, 0)), int(min(cy + r + 1, n))
        x0, x1 = int(max(cx - r, 0)), int(min(cx + r + 1, n))
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = free[y0:y1, x0:x1] & ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
        img[y0:y1, x0:x1][disc] = colour
        free[y0:y1, x0:x1] &= ~disc
    img[free] = colours[-1]
    s = supersample
    return img.reshape(size, s, size, s, 3).mean(axis=(1, 3))
