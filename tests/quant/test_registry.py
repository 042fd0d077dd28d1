"""The one variant registry: every entry says what it takes, and a stage refuses the other kind."""

import subprocess
import sys
from pathlib import Path

import pytest

from greenpipe.errors import ParamsError
from greenpipe.quant import VARIANTS, parse_variant, variants_taking


def test_every_variant_takes_a_model_or_a_split_networks_kernels():
    model, kernels = variants_taking("model"), variants_taking("kernels")
    assert {"fp32", "ptq8"} <= set(model) and {"tflite_fp32", "tflite_int8", "vitis_tf"} <= set(kernels)
    assert sorted(model + kernels) == VARIANTS.names()


def test_the_model_stage_refuses_a_kernels_variant_naming_key_variant_and_what_it_takes():
    with pytest.raises(ParamsError) as err:
        parse_variant("tflite_int8", {})
    assert str(err.value).startswith(
        "quantize.variants.tflite_int8: 'tflite_int8' takes the kernels of a split network; "
        "this stage quantizes one PyTorch model (move the entry to video.quantize"
    )


def test_the_kernels_stage_refuses_a_model_variant_named_by_method():
    with pytest.raises(ParamsError) as err:
        parse_variant("int8", {"method": "ptq8"}, "video.quantize", takes="kernels")
    msg = str(err.value)
    assert msg.startswith("video.quantize.int8: 'ptq8' takes one PyTorch model; "
                          "this stage quantizes the kernels of a split network")
    assert "tflite_int8" in msg and "quantize.variants" in msg


def test_start_from_is_refused_where_variants_do_not_chain():
    with pytest.raises(ParamsError, match=r"video.quantize.tflite_int8.start_from = 'tflite_fp32': only"):
        parse_variant("tflite_int8", {"start_from": "tflite_fp32"}, "video.quantize", takes="kernels")


def test_importing_the_registry_loads_no_tensorflow():
    probe = "import greenpipe.quant.registry, sys; print('tensorflow' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == "False"
