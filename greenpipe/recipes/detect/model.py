"""SSD detectors: a narrow VGG-style backbone or a light MobileNet-style one, multi-scale heads.

The network maps (N, 3, S, S) images in [0, 1] to one tensor (N, P, 4 + C): per default box, 4
box offsets (greenpipe.recipes.detect.boxes.encode) then C class logits, class 0 = background.
One output keeps the exported graph a plain single-output model for every quantizer and
runtime; decoding and NMS are the shared numpy post-process (postprocess.detections).

Feature maps: the backbone's stride-8 and stride-16 maps, then extra stride-2 layers down to one
cell, so an S = 128 input gives maps of 16, 8, 4, 2, 1 cells (boxes.feature_sizes, computed
without torch so that a device host can rebuild the priors from the input size alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from greenpipe.prune.lkam import Unit
from greenpipe.recipes.detect.boxes import feature_sizes, prior_boxes, priors_per_location

BACKBONES = ("vgg", "mobilenet")


@dataclass(frozen=True)
class SSDConfig:
    """What builds an SSD; stored as a checkpoint's ``model_args``."""

    num_classes: int  # object classes, background not counted
    backbone: str = "vgg"  # one of BACKBONES
    width: int = 16  # channels of the first stage; later stages use 2x, 4x, 8x
    input_size: int = 128  # px, square; a multiple of 16, at least 32

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r}: choose one of {', '.join(BACKBONES)}")
        if self.input_size < 32 or self.input_size % 16:
            raise ValueError(f"input_size {self.input_size}: must be a multiple of 16 and at least 32")
        if self.num_classes < 1 or self.width < 1:
            raise ValueError(f"num_classes {self.num_classes}, width {self.width}: both must be >= 1")

    def feature_sizes(self) -> list[int]:
        """Cells a side of each prediction map, finest first (boxes.feature_sizes)."""
        return feature_sizes(self.input_size)

    def priors(self):
        """(P, 4) centre-size default boxes matching the model's output order."""
        return prior_boxes(self.feature_sizes())

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """MobileNet v1 block: 3x3 depthwise then 1x1 pointwise, each with BN + ReLU."""
    return nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1))


def vgg_backbone(w: int) -> tuple[nn.Module, nn.Module, int, int]:
    """(to stride 8, stride 8 -> 16, channels at 8, channels at 16): VGG's conv-conv-pool stages."""
    pool = nn.MaxPool2d(2)
    s8 = nn.Sequential(conv_bn(3, w), conv_bn(w, w), pool, conv_bn(w, 2 * w), conv_bn(2 * w, 2 * w),
                       nn.MaxPool2d(2), conv_bn(2 * w, 4 * w), conv_bn(4 * w, 4 * w), nn.MaxPool2d(2))
    s16 = nn.Sequential(conv_bn(4 * w, 8 * w), conv_bn(8 * w, 8 * w), nn.MaxPool2d(2),
                        conv_bn(8 * w, 8 * w))
    return s8, s16, 4 * w, 8 * w


def mobilenet_backbone(w: int) -> tuple[nn.Module, nn.Module, int, int]:
    """The same contract as :func:`vgg_backbone` with depthwise-separable blocks (MobileNet v1)."""
    s8 = nn.Sequential(conv_bn(3, w, 3, 2), separable(w, 2 * w, 2), separable(2 * w, 2 * w),
                       separable(2 * w, 4 * w, 2), separable(4 * w, 4 * w))
    s16 = nn.Sequential(separable(4 * w, 8 * w, 2), separable(8 * w, 8 * w))
    return s8, s16, 4 * w, 8 * w


class SSD(nn.Module):
    def __init__(self, cfg: SSDConfig):
        super().__init__()
        self.cfg = cfg
        build = vgg_backbone if cfg.backbone == "vgg" else mobilenet_backbone
        self.stage8, self.stage16, c8, c16 = build(cfg.width)
        n_extra = len(cfg.feature_sizes()) - 2
        self.extras = nn.ModuleList(
            nn.Sequential(conv_bn(c16, c16 // 2, 1), conv_bn(c16 // 2, c16, 3, 2)) for _ in range(n_extra))
        self.per_prior = 4 + cfg.num_classes + 1
        b = priors_per_location()
        self.priors = b * sum(f * f for f in cfg.feature_sizes())  # P
        self.heads = nn.ModuleList(nn.Conv2d(c, b * self.per_prior, 3, padding=1)
                                   for c in [c8] + [c16] * (n_extra + 1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The prediction maps, finest first: (N, C_k, f_k, f_k) each."""
        f8 = self.stage8(x)
        maps = [f8, self.stage16(f8)]
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        return maps

    def prunable(self) -> list[Unit]:
        """The conv-BN-ReLU blocks whose kernels greenpipe.prune.lkam may remove, with their readers.

        Data runs through the backbone's blocks and then the extras' in one chain (pooling keeps
        channels); a block's output is read by the next block's conv and, where it is a prediction
        map, by that map's head. Depthwise blocks, and blocks a depthwise conv reads (most of the
        MobileNet backbone), are left out: their kernels are tied to their input channels, and
        removing them together is not done here.
        """
        chain = _blocks(self.stage8)
        sources = [len(chain) - 1]  # chain index of each prediction map's block, finest first
        chain += _blocks(self.stage16)
        sources.append(len(chain) - 1)
        for extra in self.extras:
            chain += _blocks(extra)
            sources.append(len(chain) - 1)
        heads = dict(zip(sources, self.heads))
        units = []
        for i, block in enumerate(chain):
            readers = ([chain[i + 1][0]] if i + 1 < len(chain) else []) + ([heads[i]] if i in heads else [])
            if block[0].groups == 1 and all(r.groups == 1 for r in readers):
                units.append(Unit(f"block{i}", block, tuple(readers)))
        return units

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, P, 4 + C)
        # No x.shape lookups: a graph quantizer would put a quantizer on the batch size, and constant
        # shapes export to a plain Reshape.
        out = [head(f).permute(0, 2, 3, 1).flatten(1)  # (N, f*f*B*(4 + C))
               for head, f in zip(self.heads, self.features(x))]
        return torch.cat(out, 1).reshape(-1, self.priors, self.per_prior)


def _blocks(seq: nn.Module) -> list[nn.Sequential]:
    """The conv-BN-ReLU blocks of ``seq`` in data order (a separable block gives its two)."""
    out = []
    for m in seq.children():
        if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d):
            out.append(m)
        elif isinstance(m, nn.Sequential):
            out += _blocks(m)
    return out


def build_ssd(model_args: dict) -> SSD:
    return SSD(SSDConfig(**model_args))
