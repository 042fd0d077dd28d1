"""params.yaml loading: profiles, and one clear message per bad key."""

import pytest
import yaml

from greenpipe.errors import ParamsError
from greenpipe.params import load_params, parse_params, resolve_profile


@pytest.fixture
def raw():
    with open("params.yaml") as f:
        return yaml.safe_load(f)


def test_repository_params_are_valid():
    p = load_params("params.yaml")
    assert p.base.profile == "quick"
    assert "ptq8" in p.quantize.variants and "local" in p.deploy.devices


def test_profile_selects_values(raw):
    raw["base"]["profile"] = "full"
    full = parse_params(raw)
    raw["base"]["profile"] = "quick"
    quick = parse_params(raw)
    assert full.train.epochs > quick.train.epochs
    assert resolve_profile({"a": {"quick": 1, "full": 2}, "b": [{"quick": 3, "full": 4}]}, "full") == {"a": 2, "b": [4]}


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        ("train", "epochs", "ten", "train.epochs = 'ten'"),
        ("train", "epochs", 0, "train.epochs = 0"),
        ("train", "typo_key", 1, "train.typo_key = 1: unknown key"),
        ("ingest", "val_fraction", 1.5, "ingest.val_fraction = 1.5"),
        ("deploy", "input_size", 8, "deploy.input_size = 8"),
        ("deploy", "self_ensemble", 3, "deploy.self_ensemble = 3"),
        ("base", "profile", "huge", "base.profile = 'huge'"),
    ],
)
def test_bad_value_names_key_and_value(raw, section, key, value, expected):
    raw[section][key] = value
    with pytest.raises(ParamsError) as exc:
        parse_params(raw)
    assert expected in str(exc.value)


def test_crop_must_fit_unet_depth(raw):
    raw["train"]["crop"] = 60
    with pytest.raises(ParamsError, match="multiple of 2\\*\\*depth"):
        parse_params(raw)


def test_device_target_must_exist(raw):
    raw["deploy"]["devices"]["local"]["target"] = "dpu-nowhere"
    with pytest.raises(ParamsError, match="deploy.devices.local.target = 'dpu-nowhere'"):
        parse_params(raw)


def test_every_error_is_listed_at_once(raw):
    raw["train"]["epochs"] = -1
    raw["train"]["lr"] = "fast"
    with pytest.raises(ParamsError) as exc:
        parse_params(raw)
    assert "2 invalid value(s)" in str(exc.value)


def test_validate_section_is_checked_against_the_recipes_type(raw):
    raw["validate"]["min_side"] = {"quick": 4, "full": 64}  # profile values resolve before the recipe's check
    raw["validate"]["noisy_psnr"] = [10, "x"]
    raw["validate"]["typo"] = 1
    raw["train"]["epochs"] = 0
    with pytest.raises(ParamsError) as exc:
        parse_params(raw)
    msg = str(exc.value)
    assert msg.startswith("params.yaml: 4 invalid value(s):")  # listed with the other sections' errors
    for line in ("  validate.min_side = 4: Input should be greater than or equal to 8",
                 "  validate.noisy_psnr = [10, 'x']: Value error, could not convert string to float: 'x'",
                 "  validate.typo = 1: unknown key", "  train.epochs = 0"):
        assert line in msg


def test_the_stage_gets_the_recipes_typed_validate_params(raw):
    from greenpipe.recipes import get_recipe
    from greenpipe.recipes.base import recipe_validate_params

    raw["validate"]["noisy_psnr"] = [12, 40]
    checks = recipe_validate_params(parse_params(raw))
    assert isinstance(checks, get_recipe("denoise").validate_params)
    assert checks.noisy_psnr == (12.0, 40.0) and checks.min_side == raw["validate"]["min_side"]
    del raw["validate"]
    assert recipe_validate_params(parse_params(raw)) == get_recipe("denoise").validate_params()


def test_a_recipe_without_data_checks_takes_no_validate_section(raw):
    raw["base"]["recipe"] = "video"  # declares no validate params
    with pytest.raises(ParamsError, match="validate = .*recipe video has no data checks"):
        parse_params(raw)
    del raw["validate"]
    assert parse_params(raw).validate_ == {}


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")


def _registered(module: str, registry: str, *args: str) -> str:
    import importlib

    entries = getattr(importlib.import_module(module), registry)
    return ", ".join(entries(*args) if callable(entries) else entries.names())


def _the_one_error(raw: dict, tmp_path, dotted: str, value) -> str:
    """Set ``dotted`` in ``raw`` to ``value``, load it, and return the ParamsError's one-error message."""
    *parents, last = dotted.split(".")
    tree = raw
    for key in parents:
        tree = tree[key]
    tree[last] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as exc:
        load_params(tmp_path / "params.yaml")
    assert "1 invalid value(s)" in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize(
    "dotted,typo,registry",
    [
        ("base.recipe", "denoize", ("greenpipe.recipes", "RECIPES")),
        # None: a new entry, its key the typo
        ("quantize.variants.ptq9", None, ("greenpipe.quant", "variants_taking", "model")),
        ("quantize.variants.ptq8.method", "ptq88", ("greenpipe.quant", "variants_taking", "model")),
        ("compile.targets.cpu.format", "onx", ("greenpipe.compile", "TARGETS")),
        ("deploy.devices.local.runtime", "ortt", ("greenpipe.runtime", "RUNTIMES")),
        ("deploy.devices.local.meter", "rappl", ("greenpipe.power", "METERS")),
        ("video.quantize.tflite_int9", None, ("greenpipe.quant", "variants_taking", "kernels")),
        ("segment.variants.inc.method", "inc8", ("greenpipe.quant", "variants_taking", "model")),
    ],
)
def test_a_name_no_registry_holds_fails_naming_key_and_choices(raw, tmp_path, dotted, typo, registry):
    message = _the_one_error(raw, tmp_path, dotted, {} if typo is None else typo)
    assert f"  {dotted} = {typo or dotted.split('.')[-1]!r}: not a registered " in message
    assert f"registered: {_registered(*registry)}" in message


@pytest.mark.parametrize(
    "section,name,takes,stage",
    [
        ("quantize.variants", "tflite_int8", "the kernels of a split network", "one PyTorch model"),
        ("video.quantize", "ptq8", "one PyTorch model", "the kernels of a split network"),
        ("segment.variants", "tflite_int8", "the kernels of a split network", "one PyTorch model"),
    ],
)
def test_a_variant_of_the_other_kind_fails_naming_key_and_what_it_takes(raw, tmp_path, section, name, takes,
                                                                         stage):
    message = _the_one_error(raw, tmp_path, f"{section}.{name}", {})
    assert f"  {section}.{name} = {name!r}: {name!r} takes {takes}; this stage quantizes {stage}" in message


def test_meter_auto_and_an_entry_naming_its_method_are_accepted(raw, tmp_path):
    raw["deploy"]["devices"]["local"]["meter"] = "auto"
    raw["quantize"]["variants"]["ptq8_mse"] = {"method": "ptq8", "act_calibration": "mse"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    p = load_params(tmp_path / "params.yaml")
    assert p.deploy.devices["local"].meter == "auto" and "ptq8_mse" in p.quantize.variants


def _heavy_modules_after(code: str) -> str:
    """Which of torch, TensorFlow, DVC a fresh interpreter has imported after running ``code``."""
    import subprocess
    import sys
    from pathlib import Path

    probe = f"import sys; {code}; print([m for m in ('torch', 'tensorflow', 'dvc') if m in sys.modules])"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True,
                         timeout=60)
    return out.stdout.strip()


def test_importing_params_loads_no_torch_tensorflow_or_dvc():
    assert _heavy_modules_after("import greenpipe.params") == "[]"


def test_a_stage_reads_params_light_and_checks_the_heavy_names_it_uses(raw, tmp_path):
    from greenpipe.errors import GreenpipeError
    from tasks.compile import compile_stage

    raw["compile"]["targets"]["cpu"]["format"] = "onx"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    light = load_params(tmp_path / "params.yaml", light=True)  # what every stage reads: no torch registry
    with pytest.raises(ParamsError, match="compile.targets.cpu.format = 'onx'"):
        load_params(tmp_path / "params.yaml")  # greenpipe check, the nightly: every registry
    with pytest.raises(GreenpipeError, match=r"compile.targets.cpu.format = 'onx': not a registered compile target"):
        compile_stage(light, "fp32", "cpu", tmp_path / "q", tmp_path / "d", tmp_path / "o")
    assert _heavy_modules_after("from greenpipe.params import load_params; load_params(light=True)") == "[]"


@pytest.mark.parametrize("dotted", ["deploy.devices.local.timeout_s", "deploy.devices.local.lost_after_s",
                                    "soak.duration_s", "nightly.retry_delay_s", "nightly.lock_backoff_s"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_non_finite_timeout_is_refused_naming_the_key(raw, tmp_path, dotted, value):
    """YAML's .inf passes a `> 0` check and .nan compares false both ways: both must be refused by name."""
    message = _the_one_error(raw, tmp_path, dotted, value)
    assert f"  {dotted} = {value!r}: " in message and "finite number" in message


def test_a_non_finite_variant_setting_is_refused_naming_the_key(raw):
    from greenpipe.quant import parse_variant

    with pytest.raises(ParamsError, match="lr = inf: Input should be a finite number"):
        parse_variant("fastft8", {**raw["quantize"]["variants"]["fastft8"], "lr": float("inf")})


def test_segment_deploys_only_variants_it_quantizes(raw):
    raw["segment"]["quantize"], raw["segment"]["deploy"] = ["fp32", "inc"], ["fp32", "ptq8"]
    with pytest.raises(ParamsError, match=r"deploy: \['ptq8'\] not in segment.quantize \(fp32, inc\).*add it there"):
        parse_params(raw)


def test_segment_runs_only_variants_of_its_own_table(raw):
    raw["segment"]["quantize"] = ["fp32", "qat8"]  # qat8 is in quantize.variants, not in segment.variants
    with pytest.raises(ParamsError, match=r"quantize: \['qat8'\] not keys of segment.variants .*add them there"):
        parse_params(raw)


def test_a_stage_finds_its_variant_table_by_key(raw):
    params = parse_params(raw)
    assert params.variant_table() is params.quantize.variants
    table = params.variant_table("segment.variants")
    assert set(table) == set(raw["segment"]["variants"])
    assert table["inc"]["tolerable_loss"] == raw["segment"]["variants"]["inc"]["tolerable_loss"]
    with pytest.raises(ParamsError, match="video.variants: not a table of quantization variants"):
        params.variant_table("video.variants")
