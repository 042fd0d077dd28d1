"""The vai_q_pytorch adapters, everything that runs without the Vitis AI container."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.quant import quantize_variant
from greenpipe.quant.context import QuantContext, quant_context
from greenpipe.quant.vitis import (
    VITIS_VARIANTS,
    VitisFastftConfig,
    VitisPtqConfig,
    VitisQatConfig,
    call_plan,
    discover_outputs,
    missing_message,
)
from tests.stage_fixtures import calib_batches, tiny_unet

HAS_NNDCT = importlib.util.find_spec("pytorch_nndct") is not None


@pytest.mark.skipif(HAS_NNDCT, reason="pytorch_nndct is installed: the missing-toolchain path cannot run")
@pytest.mark.parametrize("variant", VITIS_VARIANTS)
def test_missing_toolchain_message_is_exact(variant, tmp_path):
    with quant_context(QuantContext(data=tmp_path, out=tmp_path / variant)):
        with pytest.raises(ToolchainMissing) as err:
            quantize_variant(variant, {variant: {}}, tiny_unet(), calib_batches())
    mode = variant.removeprefix("vitis_")  # the bundle script's mode: ptq, fastft, qat
    assert str(err.value) == (
        f"variant {variant} needs the Python module 'pytorch_nndct' (vai_q_pytorch, AMD's Vitis AI quantizer), "
        "which is not importable here. It is not on PyPI, and the Vitis AI 3.5 container that ships it has "
        "Python 3.8 and torch 1.13, where greenpipe does not run. Quantize in the container from a bundle "
        "instead: `greenpipe vitis-bundle CHECKPOINT CALIB_DUMP --arch ARCH_JSON --out BUNDLE`, then "
        f"`infra/vitis/run.sh BUNDLE {mode}`, and take the xmodel back with `greenpipe vitis-import BUNDLE {mode} "
        "--out DIR`. Check: `python -c \"import pytorch_nndct\"`."
    )
    assert str(err.value) == missing_message(variant)
    assert not (tmp_path / variant).exists()  # failed before doing any work


def _whats(plan):
    return [c.what for c in plan]


def test_ptq_plan_follows_the_documented_sequence(tmp_path):
    plan = call_plan("vitis_ptq", VitisPtqConfig(calib_batches=8), tmp_path, (1, 3, 128, 128), 32)
    assert _whats(plan) == [
        "torch_quantizer", "forward", "quantizer.export_quant_config",
        "torch_quantizer", "forward", "quantizer.export_xmodel", "quantizer.export_onnx_model",
    ]
    assert plan[0].kwargs == {"quant_mode": "calib", "dummy_input_shape": (1, 3, 128, 128),
                              "output_dir": str(tmp_path), "device": "cpu"}
    assert plan[1].kwargs["batches"] == 8
    assert plan[3].kwargs["quant_mode"] == "test"
    assert plan[4].kwargs["batches"] == 1  # test mode needs one forward before export
    assert plan[5].kwargs == {"output_dir": str(tmp_path), "deploy_check": False}


def test_ptq_plan_uses_every_sample_by_default(tmp_path):
    plan = call_plan("vitis_ptq", VitisPtqConfig(), tmp_path, (1, 3, 64, 64), 32)
    assert plan[1].kwargs["batches"] == 32


def test_fastft_plan_finetunes_in_calib_mode_and_loads_in_test_mode(tmp_path):
    plan = call_plan("vitis_fastft", VitisFastftConfig(calib_batches=8, ft_batches=16), tmp_path, (1, 3, 64, 64), 32)
    whats = _whats(plan)
    assert whats.index("quantizer.fast_finetune") < whats.index("quantizer.export_quant_config")
    test_mode = [i for i, c in enumerate(plan) if c.what == "torch_quantizer"][1]
    assert whats.index("quantizer.load_ft_param") == test_mode + 1
    assert plan[whats.index("quantizer.fast_finetune")].kwargs["batches"] == 8  # no more than calibrated on


def test_qat_plan(tmp_path):
    plan = call_plan("vitis_qat", VitisQatConfig(steps=10), tmp_path, (1, 3, 64, 64), 4)
    assert _whats(plan) == ["QatProcessor", "qat_processor.trainable_model", "train",
                            "qat_processor.to_deployable", "qat_processor.export_xmodel"]
    assert plan[0].kwargs["bitwidth"] == 8 and plan[2].kwargs["steps"] == 10


def test_plan_rejects_other_variants(tmp_path):
    with pytest.raises(GreenpipeError, match="not a Vitis variant"):
        call_plan("ptq8", VitisPtqConfig(), tmp_path, (1, 3, 8, 8), 1)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_discovers_what_vai_q_pytorch_writes(tmp_path):
    # vai_q_pytorch 3.0's output_dir after calib + test + export_xmodel + export_onnx_model.
    for name in ("UNet.py", "quant_info.json", "bias_corr.pth", "UNet_int.xmodel", "UNet_int.onnx"):
        _touch(tmp_path / name)
    found = discover_outputs(tmp_path)
    assert found.xmodel == tmp_path / "UNet_int.xmodel"
    assert found.quant_config == tmp_path / "quant_info.json"
    assert found.onnx == tmp_path / "UNet_int.onnx"
    assert "bias_corr.pth" in found.files


def test_discovery_fails_naming_the_dir_and_its_files(tmp_path):
    _touch(tmp_path / "quant_info.json")
    with pytest.raises(GreenpipeError) as err:
        discover_outputs(tmp_path)
    assert str(tmp_path) in str(err.value) and "quant_info.json" in str(err.value) and ".xmodel" in str(err.value)


def test_discovery_refuses_two_xmodels(tmp_path):
    _touch(tmp_path / "A_int.xmodel")
    _touch(tmp_path / "B_int.xmodel")
    with pytest.raises(GreenpipeError, match="several xmodels"):
        discover_outputs(tmp_path)
