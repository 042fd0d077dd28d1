"""The UNet's declared geometry matches what its layers do."""

import pytest
import torch

from greenpipe.models.unet import UNet, UNetConfig


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_reach_is_the_widest_side_of_the_receptive_field(depth):
    """Autograd on a UNet with positive weights: every dependency shows, at every grid phase."""
    config = UNetConfig(width=2, depth=depth)
    torch.manual_seed(0)
    net = UNet(config).double().eval()
    with torch.no_grad():
        for p in net.parameters():  # positive weights: no cancellation or dead ReLU hides a dependency
            p.copy_(p.abs() + 0.01)
    m = config.multiple
    n = (2 * (config.reach + m) // m + 1) * m  # room for the reach on both sides of every phase
    widest = 0
    for phase in range(m):
        x = torch.rand(1, 3, n, n, dtype=torch.double, requires_grad=True)
        col = n // 2 + phase
        (grad,) = torch.autograd.grad(net(x)[0, 0, n // 2, col], x)
        cols = grad[0].abs().sum(dim=(0, 1)).nonzero().flatten()
        widest = max(widest, col - int(cols.min()), int(cols.max()) - col)
    assert widest == config.reach
