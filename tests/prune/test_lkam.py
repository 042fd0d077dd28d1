"""LKAM gates, the sparsity term, utilisation, and static pruning that is exact where it should be."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenpipe.prune.lkam import attach_gates, macs_and_params, prune, sparsity, utilisation
from greenpipe.recipes.detect.model import BACKBONES, SSDConfig, build_ssd


def ssd(backbone: str):
    torch.manual_seed(0)
    model = build_ssd(SSDConfig(num_classes=2, backbone=backbone, width=4, input_size=32).to_dict())
    for m in model.modules():  # BN statistics that are not the identity, so the fold is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_removing_kernels_with_zero_gates_leaves_outputs_unchanged(backbone, tmp_path):
    model = ssd(backbone)
    units = model.prunable()
    gates = attach_gates(model, units)
    rng = np.random.default_rng(0)
    util = []
    for gate, unit in zip(gates, units):
        u = rng.uniform(0.2, 1.0, unit.kernels).astype(np.float32)
        u[rng.random(unit.kernels) < 0.4] = 0.0  # these kernels contribute nothing
        gate.static = torch.from_numpy(u)
        util.append(u)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        gated = model(x)
    macs_before, params_before = macs_and_params(model, x)
    kept = prune(model, units, util, threshold=0.05)
    with torch.no_grad():
        pruned = model(x)
    torch.testing.assert_close(pruned, gated, atol=1e-5, rtol=1e-5)
    assert not hasattr(model, "lkam")
    for unit, u in zip(units, util):
        assert kept[unit.name] == np.flatnonzero(u >= 0.05).tolist() or kept[unit.name] == [int(np.argmax(u))]
        assert unit.block[0].out_channels == len(kept[unit.name])
    macs_after, params_after = macs_and_params(model, x)
    assert macs_after < macs_before and params_after < params_before

    import onnxruntime as ort

    from greenpipe.quant.export import export_onnx

    session = ort.InferenceSession(str(export_onnx(model, x[:1], tmp_path)), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], pruned.numpy(), atol=1e-4)


def test_units_list_every_reader_and_leave_depthwise_readers_out():
    vgg, mobile = ssd("vgg"), ssd("mobilenet")
    units = vgg.prunable()
    # every conv-BN block of the VGG SSD: 6 + 3 backbone blocks, 2 per extra map
    assert len(units) == 9 + 2 * len(vgg.extras)
    readers = {id(c) for u in units for c in u.consumers}
    assert all(id(h) in readers for h in vgg.heads)
    assert all(c.groups == 1 for u in mobile.prunable() for c in (u.block[0], *u.consumers))
    assert len(mobile.prunable()) < len(vgg.prunable())


def test_sparsity_closes_gates_and_utilisation_is_the_mean_gate():
    model = ssd("vgg").train()
    units = model.prunable()
    gates = attach_gates(model, units)
    x = torch.rand(4, 3, 32, 32)
    before = utilisation(model.eval(), gates, [x[:2], x[2:]])
    with torch.no_grad():  # the mean over both batches equals the mean over the four samples at once
        model(x)
    np.testing.assert_allclose(before[0], gates[0].last.double().mean(0).numpy(), atol=1e-6)
    opt = torch.optim.Adam(gates.parameters(), 0.1)
    model.train()
    for _ in range(10):
        model(x)
        loss = sparsity(gates)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = utilisation(model.eval(), gates, [x])
    assert np.mean(np.concatenate(after)) < 0.8 * np.mean(np.concatenate(before))  # measured: 0.95 -> 0.68


def test_a_unit_keeps_its_most_used_kernel_when_all_are_below_the_threshold():
    model = ssd("vgg")
    units = model.prunable()
    attach_gates(model, units)
    util = [np.full(u.kernels, 0.01, np.float32) for u in units]
    util[0][3] = 0.02
    kept = prune(model, units, util, threshold=0.5)
    assert kept["block0"] == [3] and all(len(k) == 1 for k in kept.values())
    assert model(torch.rand(1, 3, 32, 32)).shape[-1] == 4 + 3


def test_kernels_kept_are_the_most_used_rounded_to_the_nearest_multiple():
    from greenpipe.prune.lkam import kernels_to_keep

    u = np.array([0.9, 0.01, 0.5, 0.04, 0.2, 0.0, 0.03, 0.6, 0.02, 0.7])
    assert kernels_to_keep(u, 0.05).tolist() == [0, 2, 4, 7, 9]
    # 5 above the threshold: to 4 the least used of them goes (0.2), to 8 the three most used below come back
    assert kernels_to_keep(u, 0.05, multiple=4).tolist() == [0, 2, 7, 9]
    assert kernels_to_keep(u, 0.05, multiple=8).tolist() == [0, 2, 3, 4, 6, 7, 8, 9]
    assert kernels_to_keep(u, 0.05, multiple=16).tolist() == list(range(10))  # at least one multiple, capped
    assert kernels_to_keep(u, 0.95, multiple=4).tolist() == [0, 2, 7, 9]  # none above: one multiple of the most used
    assert kernels_to_keep(u, 0.05, multiple=2).tolist() == [0, 2, 3, 4, 7, 9]  # halves round up: 5 -> 6
