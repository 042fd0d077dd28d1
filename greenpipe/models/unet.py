"""Residual UNet image denoiser.

The network predicts the noise and subtracts it from its input, so an
untrained or badly quantized residual branch degrades gracefully towards the
identity.  Every op is one the Xilinx DPU runs natively (3x3 conv + ReLU,
2x2 max-pool, nearest 2x up-sampling, concat, add), so the whole model
compiles to a single DPU subgraph, and every tensor between convolutions is
post-ReLU, which keeps int8 inference on ONNX Runtime on its fast uint8 path.

Shapes: input and output are ``(N, 3, H, W)`` float in [0, 1]; H and W must
be multiples of ``2 ** depth`` (the runtime pads, see ``greenpipe.data.tiles``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`; stored in every checkpoint."""

    in_channels: int = 3
    width: int = 16  # channels at full resolution; doubles per level
    depth: int = 3  # number of 2x down-samplings

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def multiple(self) -> int:
        """H and W of the input must be multiples of this."""
        return 2**self.depth

    @property
    def reach(self) -> int:
        """Pixels of input on either side of an output pixel that it depends on (its receptive field's
        widest side over every alignment to the 2**depth grid); a tile with this much context gives
        the same output as a whole-image pass.  Two 3x3 convs per level on the way down, three up."""
        return 8 * 2**self.depth - 6


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=False),
    )


class UNet(nn.Module):
    """UNet with a global residual: ``y = x + f(x)`` (f predicts minus the noise)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c, w, d = config.in_channels, config.width, config.depth
        widths = [w * 2**i for i in range(d + 1)]
        self.inc = _double_conv(c, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i], widths[i + 1])) for i in range(d)
        )
        self.ups = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[i + 1], widths[i], 3, padding=1),
                nn.ReLU(inplace=False),
            )
            for i in reversed(range(d))
        )
        self.up_convs = nn.ModuleList(_double_conv(2 * widths[i], widths[i]) for i in reversed(range(d)))
        self.head = nn.Conv2d(widths[0], c, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, width, H, W)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up, conv in zip(self.ups, self.up_convs):
            h = conv(torch.cat([up(h), skips.pop()], dim=1))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H, W)
        return x + self.head(self.features(x))
