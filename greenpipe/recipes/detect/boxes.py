"""SSD box arithmetic in numpy: default (prior) boxes, centre-size encoding, IoU, prior matching.

Boxes are normalised to the image (0..1). Two forms: corners ``(x1, y1, x2, y2)`` and centre-size
``(cx, cy, w, h)``. Priors are centre-size; ground truth is corners. The network regresses the
offsets of :func:`encode` (scaled by :data:`VARIANCES`, as in the SSD paper's Caffe release), and
:func:`decode` inverts them. Matching runs here, per training sample, so the torch loss only sees
per-prior targets; nothing in this module imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

VARIANCES = (0.1, 0.2)  # centre offsets / log-size ratios are divided by these before regression
ASPECTS = (2.0,)  # besides 1:1 at two scales, each prior location gets a:1 and 1:a boxes per a


def priors_per_location() -> int:
    return 2 + 2 * len(ASPECTS)


def feature_sizes(input_size: int) -> list[int]:
    """Cells a side of each SSD prediction map for a square input, finest first.

    The backbone's stride-8 and stride-16 maps, then 3x3 stride-2 (padding 1) layers halving,
    rounding up, down to one cell: 128 px gives 16, 8, 4, 2, 1.
    """
    sizes = [input_size // 8, input_size // 16]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def prior_boxes(feature_sizes: Sequence[int], s_min: float = 0.2, s_max: float = 0.9) -> np.ndarray:
    """Default boxes for square feature maps of ``feature_sizes`` cells a side, coarsest last.

    Map k of m has scale s_k = s_min + (s_max - s_min) k / (m - 1); each cell centre gets a
    1:1 box of side s_k, one of side sqrt(s_k s_{k+1}), and a:1, 1:a boxes of area s_k².
    Returns (P, 4) centre-size, ordered map by map, row by row, cell by cell, box by box (the
    order the model's heads flatten their outputs in), clipped to [0, 1].
    """
    m = len(feature_sizes)
    scales = [s_min + (s_max - s_min) * k / max(m - 1, 1) for k in range(m)] + [1.0]
    out = []
    for k, f in enumerate(feature_sizes):
        s, s_next = scales[k], math.sqrt(scales[k] * scales[k + 1])
        shapes = [(s, s), (s_next, s_next)]
        for a in ASPECTS:
            r = math.sqrt(a)
            shapes += [(s * r, s / r), (s / r, s * r)]
        centres = (np.arange(f) + 0.5) / f
        cy, cx = np.meshgrid(centres, centres, indexing="ij")  # (f, f)
        for_cell = [np.stack([cx, cy, np.full_like(cx, w), np.full_like(cx, h)], -1) for w, h in shapes]
        out.append(np.stack(for_cell, axis=2).reshape(-1, 4))  # (f*f*B, 4)
    return np.clip(np.concatenate(out), 0.0, 1.0).astype(np.float32)


def to_corners(b: np.ndarray) -> np.ndarray:
    """(..., 4) centre-size -> corners."""
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)


def to_centre(b: np.ndarray) -> np.ndarray:
    """(..., 4) corners -> centre-size."""
    return np.concatenate([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], -1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes: (A, 4) x (B, 4) -> (A, B)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area_a = np.prod(a[:, 2:] - a[:, :2], -1)
    area_b = np.prod(b[:, 2:] - b[:, :2], -1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def encode(boxes: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Corner ``boxes`` (P, 4) matched to centre-size ``priors`` (P, 4) -> regression targets (P, 4)."""
    c = to_centre(boxes)
    return np.concatenate([
        (c[:, :2] - priors[:, :2]) / (VARIANCES[0] * priors[:, 2:]),
        np.log(np.maximum(c[:, 2:], 1e-12) / priors[:, 2:]) / VARIANCES[1],
    ], -1).astype(np.float32)


def decode(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Regression outputs (..., P, 4) against ``priors`` (P, 4) -> corner boxes (..., P, 4)."""
    centre = priors[:, :2] + loc[..., :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[..., 2:] * VARIANCES[1])
    return to_corners(np.concatenate([centre, size], -1))


def match(gt: np.ndarray, labels: np.ndarray, priors: np.ndarray,
          threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Assign ground truth to priors: ``(loc_targets (P, 4), classes (P,))``, class 0 = background.

    ``gt`` is (G, 4) corners, ``labels`` (G,) 0-based object classes (stored +1). A prior takes the
    box it overlaps most when that IoU is >= ``threshold``; every box also claims its own best
    prior whatever the IoU, so no object goes unmatched (SSD's bipartite step). Background priors
    get zero loc targets (the loss ignores them).
    """
    n = len(priors)
    if len(gt) == 0:
        return np.zeros((n, 4), np.float32), np.zeros(n, np.int64)
    overlaps = iou(gt, to_corners(priors))  # (G, P)
    best_gt = overlaps.argmax(0)  # (P,)
    best_gt_iou = overlaps.max(0)
    best_prior = overlaps.argmax(1)  # (G,)
    best_gt_iou[best_prior] = 2.0  # forced matches beat any threshold
    best_gt[best_prior] = np.arange(len(gt))
    classes = np.where(best_gt_iou >= threshold, labels[best_gt] + 1, 0).astype(np.int64)
    loc = encode(gt[best_gt], priors)
    loc[classes == 0] = 0.0
    return loc, classes
