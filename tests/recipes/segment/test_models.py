"""The segment recipe's networks: shapes, HRNetV2's structure and widths, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenpipe.errors import ParamsError
from greenpipe.recipes import get_recipe
from greenpipe.recipes.segment.models import HRNET_PRESETS, HRNetV2, HRModule, build, hrnet_config, macs
from greenpipe.recipes.segment.training import model_args
from greenpipe.recipes.segment.params import SegmentModelParams

ARGS = {
    "unet": model_args(SegmentModelParams(arch="unet", width=4, depth=3), 5, "unet"),
    "hrnet": model_args(SegmentModelParams(arch="hrnet", width="tiny"), 5, "hrnet"),
}


@pytest.mark.parametrize("net", ARGS)
def test_every_network_maps_an_image_to_per_pixel_logits(net):
    model = get_recipe("segment").build_model(ARGS[net]).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 5, 64, 96)
    assert 64 % get_recipe("segment").multiple(ARGS[net]) == 0


def test_hrnet_keeps_four_resolutions_and_fuses_them_in_every_module():
    model = HRNetV2(hrnet_config("tiny", 5))
    modules = [m for m in model.modules() if isinstance(m, HRModule)]
    assert [len(m.branches) for m in modules] == [2, 3, 4]
    # every output branch sums every input branch
    assert all(len(row) == len(m.branches) for m in modules for row in m.fuse)
    # the V2 head sees every branch, concatenated at the highest resolution
    assert model.head[0][0].in_channels == sum(HRNET_PRESETS["tiny"]["widths"])


def test_hrnet_widths_match_the_paper():
    # HRNetV2-W48 is 65.9 M parameters in Wang et al.'s table (with BN; this one has none).
    w48 = HRNetV2(hrnet_config("w48", 19))
    assert 64e6 < sum(p.numel() for p in w48.parameters()) < 67e6
    w18s = HRNetV2(hrnet_config("w18s", 19))
    assert [m.branches[0][0].body[0][0].out_channels for m in w18s.modules() if isinstance(m, HRModule)] == [18] * 3
    with pytest.raises(ParamsError, match="w32"):
        hrnet_config("w32", 19)


def test_macs_count_convolutions():
    model = build({"arch": "unet", "num_classes": 2, "width": 4, "depth": 1})
    # inc: 3->4, 4->4; down: 4->8, 8->8 at half res; up conv 8->4 at full; up_convs 8->4, 4->4; head 4->2 (1x1)
    hw, q = 8 * 8, 4 * 4
    expected = hw * 4 * 3 * 9 + hw * 4 * 4 * 9 + q * 8 * 4 * 9 + q * 8 * 8 * 9 + hw * 4 * 8 * 9 \
        + hw * 4 * 8 * 9 + hw * 4 * 4 * 9 + hw * 2 * 4
    assert macs(model, (1, 3, 8, 8)) == expected


@pytest.mark.parametrize("net", ARGS)
def test_every_network_exports_to_onnx_and_ort_agrees(net, tmp_path):
    import onnxruntime as ort

    from greenpipe.quant.export import EXPORT_OPSET, export_onnx

    model = get_recipe("segment").build_model(ARGS[net]).eval()
    x = torch.rand(1, 3, 64, 64)
    path = export_onnx(model, x, tmp_path, EXPORT_OPSET)
    sess = ort.InferenceSession(str(path))
    y = torch.rand(1, 3, 64, 128).numpy()  # another size: H and W are dynamic
    got = sess.run(None, {sess.get_inputs()[0].name: y})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
