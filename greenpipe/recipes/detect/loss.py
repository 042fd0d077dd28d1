"""SSD multibox loss: smooth L1 on matched priors + cross-entropy with 3:1 hard-negative mining.

Targets come from greenpipe.recipes.detect.boxes.match (per sample, numpy): per prior the encoded
box and the class, 0 = background. Both terms are summed over the batch and divided by the number
of matched (positive) priors, as in the SSD paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_POS_RATIO = 3  # background priors kept per positive: the hardest ones (highest loss)


def multibox_loss(outputs: torch.Tensor, loc_t: torch.Tensor, cls_t: torch.Tensor,
                  neg_pos_ratio: int = NEG_POS_RATIO) -> torch.Tensor:
    """``outputs`` (N, P, 4 + C) raw; ``loc_t`` (N, P, 4) float; ``cls_t`` (N, P) int64 -> scalar.

    An image with no objects still contributes its ``neg_pos_ratio`` hardest negatives, so empty
    images teach "nothing here".
    """
    loc, conf = outputs[..., :4], outputs[..., 4:]
    pos = cls_t > 0  # (N, P)
    n_pos = pos.sum(1, keepdim=True)  # (N, 1)
    loc_loss = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum")
    ce = F.cross_entropy(conf.reshape(-1, conf.shape[-1]), cls_t.reshape(-1), reduction="none").view_as(cls_t)
    mine = ce.detach().masked_fill(pos, -1.0)  # rank negatives only
    rank = mine.argsort(1, descending=True).argsort(1)  # (N, P): 0 = hardest negative
    n_neg = torch.clamp(neg_pos_ratio * n_pos, min=neg_pos_ratio).clamp(max=pos.shape[1] - 1)
    neg = (rank < n_neg) & ~pos
    conf_loss = ce[pos | neg].sum()
    return (loc_loss + conf_loss) / n_pos.sum().clamp(min=1)
