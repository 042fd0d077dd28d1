"""The DPU emulation's rounding against a reference written from the DPU's documented rule.

greenpipe's fake-quant models (Brevitas) and ORT's QuantizeLinear round half to even. vai_q_pytorch's
rounding for the DPU (``vai_round`` method 2, "half_up") rounds ties up, towards +infinity: ``-1.5 -> -1``,
``0.5 -> 1``, ``2.5 -> 3``. In fixed point ties are common, not rare: a conv of values on power-of-two
grids lands on a finer power-of-two grid, and requantizing it hits exact halves. This test measures the
remaining difference on its fixture (ptq8 on the tiny UNet) and bounds it, so a change shows up.
"""

from __future__ import annotations

import torch

from greenpipe.quant import quantize_variant
from tests.stage_fixtures import calib_batches, tiny_unet


def dpu_round(x: torch.Tensor) -> torch.Tensor:
    """Round half up (towards +infinity), the DPU's documented rule; everything else to nearest."""
    return torch.floor(x + 0.5)


def test_the_two_rules_differ_exactly_on_ties():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -0.51, 1.7])
    assert dpu_round(x).tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 0.0, -1.0, 2.0]
    assert torch.round(x).tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 0.0, -1.0, 2.0]  # the emulation's


def _activation_rounders(model: torch.nn.Module) -> list[torch.nn.Module]:
    from brevitas.core.function_wrapper import RoundSte
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    found = []
    for proxy in model.modules():
        if isinstance(proxy, ActQuantProxyFromInjector):
            found += [m for m in proxy.modules() if isinstance(m, RoundSte)]
    return found


def test_emulation_vs_dpu_rounding_of_activations_on_the_fixture():
    model = quantize_variant("ptq8", {"ptq8": {}}, tiny_unet(), calib_batches()).model
    xs = calib_batches(4, seed=9)
    with torch.no_grad():
        emulated = torch.cat([model(x) for x in xs])
        rounders = _activation_rounders(model)
        assert rounders, "no activation quantizer found: the fixture no longer exercises the emulation"
        for r in rounders:  # the same model, every activation rounded as the DPU documents
            r.forward = dpu_round
        dpu = torch.cat([model(x) for x in xs])
    lsb = 2.0**-7  # the output's fix_point 7
    diff = (emulated - dpu).abs()
    share = float((diff > 0).float().mean())
    print(f"rounding half to even vs half up: {share:.1%} of output values differ, by at most "
          f"{float(diff.max()) / lsb:g} LSB")
    # The remaining difference: a sizeable share of outputs moves by one or two LSB. Not zero: the
    # emulation is not bit-exact with the DPU's rounding.
    assert 0.05 < share < 0.5
    assert float(diff.max()) <= 2 * lsb
