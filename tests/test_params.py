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


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
