"""Segmentation networks of the ``segment`` recipe: a UNet and HRNetV2, written in the project.

Both take ``(N, 3, H, W)`` float images in [0, 1] and return ``(N, K, H, W)``
class logits (K = the class map's size).  Only ops the DPU and ONNX Runtime's
integer path run natively are used (3x3 / 1x1 conv + ReLU, residual add,
2x2 max-pool, nearest up-sampling, concat), so both go through every quantize
variant and export to ONNX.  There is no batch norm: the models train from
scratch (no ImageNet weights can be downloaded here) and stay quantizable by
the DPU variants without a folding step.

HRNetV2 (Wang et al., "Deep High-Resolution Representation Learning", 2019):
a stride-4 stem, a stage of bottlenecks, then stages of 2, 3 and 4 parallel
branches (each half the resolution, twice the width of the previous), each
module ending in a multi-resolution fusion (every branch receives the sum of
every branch: up-sampled by 1x1 conv + nearest up-sampling, down-sampled by
strided 3x3 convs); the V2 head up-samples every branch to the highest
resolution, concatenates them and classifies each pixel.  ``HRNET_PRESETS``
holds W18-small (v1) and W48 from the paper's configs, and ``tiny`` for tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from greenpipe.errors import ParamsError
from greenpipe.models.unet import UNet, UNetConfig


@dataclass(frozen=True)
class SegUNetConfig:
    """Architecture of a :class:`SegUNet`; stored in every checkpoint."""

    num_classes: int = 9
    width: int = 16  # channels at full resolution; doubles per level
    depth: int = 4  # number of 2x down-samplings

    @property
    def multiple(self) -> int:
        return 2**self.depth


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding=k // 2)]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class SegUNet(UNet):
    """The project's UNet (greenpipe/models/unet.py) with a per-pixel classifier head and no residual."""

    def __init__(self, config: SegUNetConfig = SegUNetConfig()):
        super().__init__(UNetConfig(in_channels=3, width=config.width, depth=config.depth))
        self.config = config
        self.head = nn.Conv2d(config.width, config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, K, H, W)
        return self.head(self.features(x))


@dataclass(frozen=True)
class HRNetConfig:
    """Architecture of an :class:`HRNetV2`; stored in every checkpoint (``preset`` is informative)."""

    num_classes: int = 9
    preset: str = "w18s"
    stem: int = 64  # channels of the two stride-2 stem convs
    stage1_blocks: int = 1  # bottlenecks in stage 1
    stage1_width: int = 32  # bottleneck width (its output is 4x this)
    widths: tuple[int, ...] = (18, 36, 72, 144)  # branch widths, highest resolution first
    modules: tuple[int, ...] = (1, 1, 1)  # HR modules in stages 2, 3, 4
    blocks: tuple[int, ...] = (2, 2, 2)  # basic blocks per branch in each module of stages 2, 3, 4

    multiple = 32  # the lowest branch is at stride 32

    def to_dict(self) -> dict:
        return asdict(self)


HRNET_PRESETS: dict[str, dict] = {
    # HRNetV2-W18-Small-v1 (the paper's small config) and W48; `tiny` keeps tests and demos fast.
    "tiny": {"stem": 16, "stage1_blocks": 1, "stage1_width": 8, "widths": (8, 16, 32, 64),
             "modules": (1, 1, 1), "blocks": (1, 1, 1)},
    "w18s": {"stem": 64, "stage1_blocks": 1, "stage1_width": 32, "widths": (18, 36, 72, 144),
             "modules": (1, 1, 1), "blocks": (2, 2, 2)},
    "w48": {"stem": 64, "stage1_blocks": 4, "stage1_width": 64, "widths": (48, 96, 192, 384),
            "modules": (1, 4, 3), "blocks": (4, 4, 4)},
}


def hrnet_config(preset: str, num_classes: int) -> HRNetConfig:
    """The :class:`HRNetConfig` of a named width (``HRNET_PRESETS``)."""
    if preset not in HRNET_PRESETS:
        raise ParamsError(f"segment.models.hrnet.width = {preset!r}: not an HRNetV2 width; "
                          f"choose one of {', '.join(HRNET_PRESETS)}")
    return HRNetConfig(num_classes=num_classes, preset=preset, **HRNET_PRESETS[preset])


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut: ``relu(x + f(x))``."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), _conv(c, c, relu=False))
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (4x ``width`` out) with a projected shortcut where the widths differ."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(_conv(cin, width, 1), _conv(width, width), _conv(width, cout, 1, relu=False))
        self.short = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.short(x) + self.body(x))


def _down(cin: int, cout: int, steps: int) -> nn.Sequential:
    """``steps`` stride-2 3x3 convs from ``cin`` to ``cout`` channels (ReLU between, not after the last)."""
    layers = [_conv(cin, cin, stride=2) for _ in range(steps - 1)]
    return nn.Sequential(*layers, _conv(cin, cout, stride=2, relu=False))


class HRModule(nn.Module):
    """Parallel branches of basic blocks, then the exchange: every output is the sum of every branch."""

    def __init__(self, widths: tuple[int, ...], blocks: int):
        super().__init__()
        n = len(widths)
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in widths)
        fuse: list[nn.ModuleList] = []
        for i in range(n):  # output branch i
            row = []
            for j in range(n):  # input branch j
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # lower resolution: 1x1 conv to branch i's width, nearest up-sampling
                    row.append(nn.Sequential(nn.Conv2d(widths[j], widths[i], 1),
                                             nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                else:  # higher resolution: i - j stride-2 convs
                    row.append(_down(widths[j], widths[i], i - j))
            fuse.append(nn.ModuleList(row))
        self.fuse = nn.ModuleList(fuse)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for row in self.fuse:
            total = row[0](xs[0])
            for layer, x in zip(row[1:], xs[1:]):
                total = total + layer(x)
            out.append(self.relu(total))
        return out


class HRNetV2(nn.Module):
    """HRNetV2 for segmentation: stem (stride 4), stage 1, stages 2-4 of HR modules, the V2 head."""

    def __init__(self, config: HRNetConfig = HRNetConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = nn.Sequential(_conv(3, config.stem, stride=2), _conv(config.stem, config.stem, stride=2))
        layers, cin = [], config.stem
        for _ in range(config.stage1_blocks):
            layers.append(Bottleneck(cin, config.stage1_width))
            cin = 4 * config.stage1_width
        self.stage1 = nn.Sequential(*layers)
        # Transitions: into stage s+2 a new branch is made from the lowest one by a stride-2 conv; at
        # the first, both branches come from stage 1's output.
        self.transitions = nn.ModuleList([
            nn.ModuleList([_conv(cin, w[0]), _conv(cin, w[1], stride=2)]),
            nn.ModuleList([_conv(w[1], w[2], stride=2)]),
            nn.ModuleList([_conv(w[2], w[3], stride=2)]),
        ])
        self.stages = nn.ModuleList(
            nn.Sequential(*[HRModule(w[: s + 2], config.blocks[s]) for _ in range(config.modules[s])])
            for s in range(3)
        )
        total = sum(w)
        self.ups = nn.ModuleList(nn.Upsample(scale_factor=2**i, mode="nearest") for i in range(1, 4))
        self.head = nn.Sequential(_conv(total, total, 1), nn.Conv2d(total, config.num_classes, 1))
        self.out_up = nn.Upsample(scale_factor=4, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, K, H, W), H, W % 32 == 0
        x = self.stage1(self.stem(x))  # (N, C1, H/4, W/4)
        xs = [t(x) for t in self.transitions[0]]  # strides 4, 8
        xs = list(self.stages[0](xs))
        xs = list(self.stages[1]([*xs, self.transitions[1][0](xs[-1])]))  # + stride 16
        xs = list(self.stages[2]([*xs, self.transitions[2][0](xs[-1])]))  # + stride 32
        feats = torch.cat([xs[0], *(up(t) for up, t in zip(self.ups, xs[1:]))], dim=1)  # (N, sum(w), H/4, W/4)
        return self.out_up(self.head(feats))


def build(model_args: dict) -> nn.Module:
    """The float model ``model_args`` (``{"arch": ..., **config}``) describes."""
    args = dict(model_args)
    arch = args.pop("arch")
    if arch == "unet":
        return SegUNet(SegUNetConfig(**args))
    if arch == "hrnet":
        for key in ("widths", "modules", "blocks"):
            args[key] = tuple(args[key])
        return HRNetV2(HRNetConfig(**args))
    raise ParamsError(f"model arch {arch!r}: not a segment model; choose unet or hrnet")


def multiple(model_args: dict) -> int:
    """Input H and W must be multiples of this."""
    if model_args["arch"] == "unet":
        return 2 ** int(model_args.get("depth", SegUNetConfig.depth))
    return HRNetConfig.multiple


def macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at ``shape`` (convolutions only; counted by hooks)."""
    total = 0

    def hook(m: nn.Conv2d, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(shape))
    finally:
        for h in handles:
            h.remove()
    return total
