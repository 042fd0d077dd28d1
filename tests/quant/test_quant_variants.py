"""Every registered quantization variant: quantize, export, compile, run in ORT, agree with fake-quant."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from greenpipe.compile.agreement import sqnr_db
from greenpipe.compile.onnx_cpu import build
from greenpipe.doctor import registered
from greenpipe.errors import ParamsError, ToolchainMissing
from greenpipe.quant import parse_variant, quantize_variant, variants_taking
from greenpipe.quant.context import QuantContext, quant_context
from greenpipe.quant.export import EXPORT_OPSET, export_onnx, onnx_scales
from greenpipe.runtime.ort import OrtRunner
from tests.stage_fixtures import calib_batches, denoise_training, tiny_unet
from tests.workspace import make_prepared

TOLERANCE = 2.0**-7  # compile.targets.cpu.agreement_tolerance: one LSB of an int8 output at fix_point 7


def _fake_quant(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = model(x)
    return getattr(out, "value", out).numpy()


# Keys that keep the training variants to a few steps (and inc to one tuning
# trial) on the tiny model; every other variant runs its defaults.
TINY_CONFIGS = {
    "fastft8": {"iterations": 5, "batch_size": 2},
    "inc": {"max_trials": 1, "calib_samples": 2, "act_algo": ["minmax"]},
    "qat8": {"steps": 3},
    "qat4": {"steps": 3},
    "vitis_qat": {"steps": 3},
}


# The least SQNR (dB) of each variant's fake-quant output against the float model's on the fixture
# (tiny untrained UNet, 32 px inputs; this host: about 31 dB for the Brevitas int8 variants and qat4, 46 for
# inc): an int8 variant must stay close to the float model, 4-bit weights
# cost more, and fp32 is the float model.  The figure each variant reaches is printed by -s.
MIN_SQNR_DB = {"fp32": 120.0, "qat4": 20.0}
MIN_SQNR_DB_INT8 = 25.0


def _tools_here(name: str) -> tuple[bool, str]:
    """Whether every external tool variant ``name``'s module declares is present here (greenpipe doctor)."""
    entry = next(e for e in registered() if e.kind == "variant" and e.name == name)
    found = [t.probe() for t in entry.tools]
    return all(f.present for f in found), "; ".join(f.detail for f in found if not f.present)


@pytest.mark.parametrize("name", variants_taking("model"))
def test_variant_deploys_and_agrees_with_fake_quant(name, tmp_path):
    # The stage context gives QAT its train split and inc its val split (a tiny prepared dataset).
    data = make_prepared(tmp_path / "data", size=48)
    ctx = QuantContext(data=data, training=denoise_training(data), seed=0, out=tmp_path / "quant", multiple=4)
    here, missing = _tools_here(name)
    if not here:
        # Without its toolchain the variant must refuse, naming it, before doing any work: that is all
        # that can be checked here (docs/tools.md lists it as never run).
        with quant_context(ctx), pytest.raises(ToolchainMissing):
            quantize_variant(name, {name: TINY_CONFIGS.get(name, {})}, tiny_unet(), calib_batches())
        assert not ctx.out.exists(), f"{name} wrote outputs before finding its toolchain missing ({missing})"
        return
    with quant_context(ctx):
        result = quantize_variant(name, {name: TINY_CONFIGS.get(name, {})}, tiny_unet(), calib_batches())
    x = calib_batches(1, seed=9)[0]
    # The UNet is residual (output = input + correction): compare the corrections, which the input
    # would otherwise dwarf.
    reference, quantized = _fake_quant(tiny_unet(), x) - x.numpy(), _fake_quant(result.model, x) - x.numpy()
    sqnr = sqnr_db(reference, quantized)
    print(f"{name}: fake-quant vs float SQNR of the correction on the fixture {sqnr:.1f} dB")
    assert sqnr >= MIN_SQNR_DB.get(name, MIN_SQNR_DB_INT8), f"{name}: {sqnr:.1f} dB"
    exported = export_onnx(result.model, calib_batches(1)[0], tmp_path)
    compiled, _ = build(onnx.load(exported), EXPORT_OPSET)
    onnx.save(compiled, tmp_path / "deployed.onnx")
    runner = OrtRunner(tmp_path / "deployed.onnx", threads=1, batch=1)
    gen = torch.Generator().manual_seed(5)
    for shape in [(1, 3, 32, 32), (2, 3, 48, 64)]:  # batch, height and width are dynamic axes
        x = torch.rand(*shape, generator=gen)
        deployed = runner.run(x.numpy())
        assert deployed.shape == shape
        assert np.abs(deployed - _fake_quant(result.model, x)).max() <= TOLERANCE

    scales = onnx_scales(onnx.load(exported))
    if result.dpu_numerics:
        assert scales, "a DPU-numerics variant must export quantized tensors"
        for tensor, s in scales.items():
            assert s["pow2"] and s["scale"] == 2.0 ** round(s["log2_scale"]), tensor
            assert s["zero_point"] == 0 and s["dtype"] == "int8", tensor
        assert result.bits["weights"] <= 8 and result.bits["activations"] <= 8
    if result.deployable_to_dpu:
        assert result.dpu_numerics


@pytest.mark.parametrize("act_calibration", ["minmax", "percentile", "mse"])
def test_ptq8_deployed_is_bit_exact_with_fake_quant(act_calibration, tmp_path):
    # With power-of-two scales every float op of the fake-quant model is exact,
    # so the deployed int8 graph must reproduce it bit for bit.  This fails when
    # Brevitas' calibration leaves shared quantizers as observers (see dpu.calibrate).
    config = {"act_calibration": act_calibration, "bias_correction": True}
    result = quantize_variant("ptq8", {"ptq8": config}, tiny_unet(seed=3), calib_batches(seed=1))
    compiled, stats = build(onnx.load(export_onnx(result.model, calib_batches(1)[0], tmp_path)), EXPORT_OPSET)
    onnx.save(compiled, tmp_path / "deployed.onnx")
    runner = OrtRunner(tmp_path / "deployed.onnx", threads=1, batch=1)
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(runner.run(x.numpy()), _fake_quant(result.model, x))
    assert result.report["calibration"]["activations"] == act_calibration
    assert result.report["calibration"]["batches"] == 4
    assert result.report["float_layers"] == []
    assert stats["bias_to_int32"] == len(result.report["quantized_layers"]) and stats["bias_kept_float"] == 0


def test_calibration_leaves_no_quantizer_observing_only():
    # Brevitas' calibration_mode restores a quantizer shared by two proxies (the
    # inputs of a concat) as observer-only; dpu.calibrate must undo that.
    result = quantize_variant("ptq8", {"ptq8": {"bias_correction": False}}, tiny_unet(), calib_batches())
    flags = [m.observer_only for m in result.model.modules() if hasattr(m, "observer_only")]
    assert flags and not any(flags)


def test_unknown_variant_key_fails_naming_it():
    with pytest.raises(ParamsError) as err:
        parse_variant("ptq8", {"act_calibraton": "minmax"})
    assert "quantize.variants.ptq8.act_calibraton" in str(err.value)
    assert "unknown key" in str(err.value)


def test_bad_variant_value_fails_naming_key_and_choices():
    with pytest.raises(ParamsError) as err:
        parse_variant("ptq8", {"act_calibration": "entropy", "percentile": 150.0})
    msg = str(err.value)
    assert "quantize.variants.ptq8.act_calibration = 'entropy'" in msg and "'minmax'" in msg
    assert "quantize.variants.ptq8.percentile = 150.0" in msg


def test_unregistered_method_fails_naming_the_entry():
    with pytest.raises(ParamsError) as err:
        parse_variant("ptq3", {})
    assert "quantize.variants.ptq3" in str(err.value) and "ptq8" in str(err.value)


def test_method_lets_one_handler_serve_two_entries():
    variant, config = parse_variant("ptq8_mse", {"method": "ptq8", "act_calibration": "mse"})
    assert variant.name == "ptq8" and config.act_calibration == "mse"


def test_start_from_chains_variants_and_rejects_cycles():
    variants = {"base": {"method": "fp32"}, "refined": {"method": "ptq8", "start_from": "base"}}
    result = quantize_variant("refined", variants, tiny_unet(), calib_batches(2))
    assert result.dpu_numerics
    with pytest.raises(ParamsError, match="cycle"):
        cyclic = {"a": {"method": "fp32", "start_from": "b"}, "b": {"method": "fp32", "start_from": "a"}}
        quantize_variant("a", cyclic, tiny_unet(), [])


def test_graph_not_ending_in_a_quantizer_gets_an_int8_output(tmp_path):
    # The UNet ends in a residual add that Brevitas re-quantizes itself; a plain
    # conv stack does not, so quantize_graph appends the output quantizer.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1)
    ).eval()
    result = quantize_variant("ptq8", {"ptq8": {}}, model, calib_batches())
    exported = onnx.load(export_onnx(result.model, calib_batches(1)[0], tmp_path))
    last = next(n for n in exported.graph.node if n.output[0] == exported.graph.output[0].name)
    assert last.op_type == "DequantizeLinear"
    compiled, _ = build(exported, EXPORT_OPSET)
    onnx.save(compiled, tmp_path / "deployed.onnx")
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(
        OrtRunner(tmp_path / "deployed.onnx", 1, 1).run(x.numpy()), _fake_quant(result.model, x)
    )


@pytest.mark.parametrize("act_calibration", ["minmax", "percentile", "mse"])
def test_an_activation_that_never_fires_still_gets_a_power_of_two_scale(act_calibration, tmp_path):
    # A ReLU that is zero over the whole calibration set (a dead decoder layer of a trained
    # UNet) has no range to calibrate; its scale must still be a power of two, as a DPU needs.
    model = tiny_unet()
    dead = model.up_convs[0][0]
    with torch.no_grad():
        dead.weight.zero_()
        dead.bias.fill_(-1.0)
    config = {"act_calibration": act_calibration, "bias_correction": False}
    result = quantize_variant("ptq8", {"ptq8": config}, model, calib_batches())
    scales = onnx_scales(onnx.load(export_onnx(result.model, calib_batches(1)[0], tmp_path)))
    not_pow2 = {tensor: s["scale"] for tensor, s in scales.items() if not s["pow2"]}
    assert not not_pow2
