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
    a, b = r_min ** (1 - alpha), r_max ** (1 - alpha)
    radii = (a - rng.uniform(size=MAX_DISCS) * (a - b)) ** (1 / (1 - alpha))  # inverse CDF of r**-alpha
    centres = rng.uniform(0, n, (MAX_DISCS, 2))
    colours = (rng.uniform(0.02, 0.98, (MAX_DISCS, 3)) ** 1.5).astype(np.float32)
    # Each pixel takes the colour of the first disc (front-most) that covers it; uncovered ones the last.
    front = np.full(n * n, MAX_DISCS - 1, np.int64)
    cy, cx = centres[:, 0], centres[:, 1]
    y0, y1 = np.maximum(cy - radii, 0).astype(np.int64), np.minimum(cy + radii + 1, n).astype(np.int64)
    x0, x1 = np.maximum(cx - radii, 0).astype(np.int64), np.minimum(cx + radii + 1, n).astype(np.int64)
    extent = np.maximum(y1 - y0, x1 - x0)
    # Discs in batches of similar bounding-box side: every pixel of the box tested at once per batch.
    bounds = [0, *(2 ** k for k in range(2, int(np.ceil(np.log2(max(n, 4)))) + 1)), n + 1]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        idx = np.flatnonzero((extent > lo) & (extent <= hi))
        for chunk in np.array_split(idx, max(1, len(idx) * hi * hi // (1 << 22))):
            off = np.arange(hi)
            yy = y0[chunk, None, None] + off[None, :, None]
            xx = x0[chunk, None, None] + off[None, None, :]
            inside = ((yy < y1[chunk, None, None]) & (xx < x1[chunk, None, None])
                      & ((yy - cy[chunk, None, None]) ** 2 + (xx - cx[chunk, None, None]) ** 2
                         <= (radii[chunk] * radii[chunk])[:, None, None]))
            disc = np.broadcast_to(chunk[:, None, None], inside.shape)
            np.minimum.at(front, (yy * n + xx)[inside], disc[inside])
    img = colours[front].reshape(n, n, 3)
    s = supersample
    return img.reshape(size, s, size, s, 3).mean(axis=(1, 3))
