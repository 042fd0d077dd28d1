"""The segment eval stage's figures: per-class IoU bars and colour overlays of predictions vs ground truth.

``iou_bars`` draws one bar group per class, one bar per variant (matplotlib,
Agg); ``overlay`` stacks, for one val image, the image, its ground truth and a
prediction blended over the image in the class palette (ignore pixels black).
Each figure's title names what it shows and where its numbers come from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greenpipe.recipes.segment.data import IGNORE

# A fixed colour per class index (report overlays); ignore pixels are black.
PALETTE = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70], [107, 142, 35], [70, 130, 180], [0, 0, 142],
                    [220, 20, 60], [153, 153, 153], [220, 220, 0], [102, 102, 156], [190, 153, 153],
                    [250, 170, 30], [152, 251, 152], [255, 0, 0], [0, 0, 70], [0, 60, 100], [0, 80, 100],
                    [0, 0, 230], [119, 11, 32]], np.uint8)


def colour(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) float in [0, 1]; IGNORE is black."""
    out = palette[np.where(label == IGNORE, 0, label) % len(palette)].astype(np.float32) / 255
    out[label == IGNORE] = 0
    return out


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(3H, W, 3): the image, the ground truth, the prediction at 60 % over the image."""
    return np.concatenate([image, colour(truth, palette), 0.4 * image + 0.6 * colour(pred, palette)], axis=0)


def iou_bars(per_variant: dict[str, dict[str, float | None]], title: str, path: Path) -> None:
    """A grouped bar chart of per-class IoU, one bar per variant; a class never seen is drawn at 0, hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(next(iter(per_variant.values())))
    width = 0.8 / len(per_variant)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(classes)), 3.5))
    for k, (variant, ious) in enumerate(per_variant.items()):
        values = [ious[c] if ious[c] is not None else 0.0 for c in classes]
        bars = ax.bar(np.arange(len(classes)) + k * width, values, width, label=variant)
        for bar, c in zip(bars, classes):
            if ious[c] is None:
                bar.set_hatch("//")
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
