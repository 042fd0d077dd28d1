"""The one detection post-process every runtime shares: softmax, box decoding, per-class NMS (numpy, CPU).

The exported graph (ONNX, and whatever is compiled from it) stops at the raw head outputs, one
tensor ``(N, P, 4 + C)``: per prior, 4 box offsets then C class logits (class 0 = background).
PyTorch, ONNX Runtime and any device runtime hand that tensor to :func:`detections`, so decoding
and suppression are the same code, and the same numbers, wherever the network ran. NMS stays
out of the graph because DPU and int8 compilers do not take data-dependent output sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from greenpipe.recipes.detect.boxes import decode, iou


@dataclass(frozen=True)
class Detections:
    """One image's detections: corner boxes (K, 4) in [0, 1], scores (K,), 0-based classes (K,)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices of kept boxes, highest score first.

    A box is kept when its IoU with every already-kept box is <= ``iou_threshold``. Ties in score
    keep the lower index first (stable sort), so the result is deterministic. With ``limit`` it
    stops after that many: they are the first ``limit`` of the whole result, as boxes are kept in
    score order.
    """
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and (limit is None or len(keep) < limit):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[iou(boxes[i:i + 1], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def detections(raw: np.ndarray, priors: np.ndarray, score_threshold: float = 0.01,
               iou_threshold: float = 0.45, top_k: int = 100) -> list[Detections]:
    """Raw head outputs (N, P, 4 + C) -> per image up to ``top_k`` detections after per-class NMS.

    Per object class c >= 1: keep priors whose softmax score exceeds ``score_threshold``, decode
    their boxes against ``priors`` (P, 4 centre-size), suppress overlaps above ``iou_threshold``;
    then keep the ``top_k`` best over all classes. Reported classes are 0-based object classes.
    """
    loc, probs = raw[..., :4], softmax(raw[..., 4:].astype(np.float64))
    boxes_all = np.clip(decode(loc.astype(np.float64), priors), 0.0, 1.0)
    out = []
    for boxes, p in zip(boxes_all, probs):
        found_b, found_s, found_c = [], [], []
        for c in range(1, p.shape[-1]):
            idx = np.flatnonzero(p[:, c] > score_threshold)
            kept = idx[nms(boxes[idx], p[idx, c], iou_threshold, top_k)]  # only a class's top_k can make the cut
            found_b.append(boxes[kept])
            found_s.append(p[kept, c])
            found_c.append(np.full(len(kept), c - 1, np.int64))
        b, s, c = np.concatenate(found_b), np.concatenate(found_s), np.concatenate(found_c)
        best = np.argsort(-s, kind="stable")[:top_k]
        out.append(Detections(b[best].astype(np.float32), s[best].astype(np.float32), c[best]))
    return out
