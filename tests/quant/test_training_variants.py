"""fastft8 / qat8 / qat4 beyond the shared round-trip test: what each claims about its numerics and state."""

from __future__ import annotations

import pytest
import torch

from greenpipe.errors import GreenpipeError
from greenpipe.quant import quantize_variant
from greenpipe.quant.context import QuantContext, quant_context
from greenpipe.quant.qat8 import Qat8Config, run_qat
from tests.stage_fixtures import calib_batches, denoise_training, tiny_unet
from tests.workspace import make_prepared

QAT = {"steps": 6, "save_every": 3, "ema": 0.9}  # the weight average must resume too


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"), size=48)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow  # three short QAT runs: ~20 s on 2 cores
def test_qat_resumes_to_the_same_weights_as_an_uninterrupted_run(data, tmp_path):
    config = Qat8Config(**QAT)
    ctx = QuantContext(data=data, training=denoise_training(data), seed=3, out=tmp_path / "a" / "qat8", multiple=4)
    with quant_context(ctx):
        straight, report = run_qat("qat8", tiny_unet(), calib_batches(), config)
    assert report["qat"]["resumed_from_step"] is None and report["qat"]["steps"] == 6

    ctx = QuantContext(data=data, training=denoise_training(data), seed=3, out=tmp_path / "b" / "qat8", multiple=4)
    with quant_context(ctx):
        run_qat("qat8", tiny_unet(), calib_batches(), config, stop_after=4)  # "killed" after step 4
        state = ctx.state_file("qat8")
        assert state.exists()  # saved at step 3 (save_every)
        resumed, report = run_qat("qat8", tiny_unet(), calib_batches(), config)
    assert report["qat"]["resumed_from_step"] == 3
    assert not state.exists()  # removed once training completes
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("scaling_impl.value"):
            # Brevitas' learned log2-domain scale parameters come back a few
            # ULPs off after a state_dict round trip; they are rounded to the
            # same power of two, so the model computes the same (checked below).
            assert torch.allclose(a[key], b[key], atol=1e-3), key
        else:
            assert torch.equal(a[key], b[key]), key
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(straight(x), resumed(x))


def test_qat_state_of_other_params_is_not_resumed(data, tmp_path):
    ctx = QuantContext(data=data, training=denoise_training(data), seed=0, out=tmp_path / "qat8", multiple=4)
    with quant_context(ctx):
        run_qat("qat8", tiny_unet(), calib_batches(), Qat8Config(**QAT), stop_after=3)
        _, report = run_qat("qat8", tiny_unet(), calib_batches(), Qat8Config(**{**QAT, "lr": 1e-3}))
    assert report["qat"]["resumed_from_step"] is None


@pytest.mark.slow  # 60 QAT steps
def test_qat_trains_toward_the_clean_target(data, tmp_path):
    # A float model that is a poor denoiser (random weights) must improve
    # under QAT: the L1 loss of its last steps is lower than of its first.
    ctx = QuantContext(data=data, training=denoise_training(data), seed=0, out=None, multiple=4)
    config = Qat8Config(steps=60, lr=3e-3)
    with quant_context(ctx):
        _, report = run_qat("qat8", tiny_unet(), calib_batches(), config)
    assert report["qat"]["loss_last_20"] < report["qat"]["loss_first_20"]


def test_qat4_weights_are_4bit_pow2_and_not_dpu_deployable(data, tmp_path):
    ctx = QuantContext(data=data, training=denoise_training(data), seed=0, out=tmp_path / "qat4", multiple=4)
    with quant_context(ctx):
        result = quantize_variant("qat4", {"qat4": {"steps": 2}},
                                  tiny_unet(), calib_batches())
    assert result.bits == {"weights": 4, "activations": 8, "bias": 8}
    assert not result.deployable_to_dpu and not result.dpu_numerics
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    layers = [m for m in result.model.modules() if isinstance(m, QuantWeightBiasInputOutputLayer)]
    assert layers
    for layer in layers:
        qw = layer.quant_weight()
        ints = (qw.value / qw.scale).round()
        assert int(qw.bit_width) == 4 and ints.abs().max() <= 7  # narrow signed 4-bit
        assert torch.log2(qw.scale).round().eq(torch.log2(qw.scale)).all()  # power of two


def test_qat_without_a_stage_context_says_what_it_needs():
    with pytest.raises(GreenpipeError, match=r"qat8 needs the recipe's training task.*dvc repro quantize@qat8"):
        quantize_variant("qat8", {"qat8": {}}, tiny_unet(), calib_batches())


def test_qat_in_a_context_without_a_training_task_says_so(data):
    with quant_context(QuantContext(data=data, multiple=4)):
        with pytest.raises(GreenpipeError, match=r"qat8 trains with the recipe's training task, and this context "
                                                 r"gives none"):
            quantize_variant("qat8", {"qat8": {"steps": 1}}, tiny_unet(), calib_batches())


def test_fastft8_learns_rounding_and_keeps_int8_pow2_weights():
    batches = calib_batches()
    ptq = quantize_variant("ptq8", {"ptq8": {"bias_correction": False}}, tiny_unet(), batches)
    ft = quantize_variant("fastft8", {"fastft8": {"iterations": 30, "batch_size": 2, "bias_correction": False}},
                          tiny_unet(), batches)
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    def int_weights(model):
        return [(m.quant_weight().value / m.quant_weight().scale, m.quant_weight().scale)
                for m in model.modules() if isinstance(m, QuantWeightBiasInputOutputLayer)]

    changed = 0
    for (w_ptq, s_ptq), (w_ft, s_ft) in zip(int_weights(ptq.model), int_weights(ft.model)):
        assert torch.equal(s_ptq, s_ft)  # learned rounding moves no scale
        assert torch.equal(w_ft, w_ft.round()) and w_ft.abs().max() <= 127  # still int8 on the same grid
        assert (w_ft - w_ptq).abs().max() <= 1  # each weight is floor or ceil of the float value
        changed += int((w_ft != w_ptq).sum())
    assert changed > 0  # some rounding decisions moved away from round-to-nearest
    assert ft.report["fast_finetune"]["layers"] == len(ft.report["quantized_layers"])
