"""benchmarks/seed_spread.py: overrides apply like params.yaml edits; bad ones fail before any training."""

import pytest
import yaml

from benchmarks.seed_spread import main, with_overrides


def test_overrides_replace_nested_keys_and_parse_values_as_yaml():
    raw = {"train": {"epochs": {"quick": 16, "full": 200}, "lr": 0.002}, "base": {"seed": 0}}
    out = with_overrides(raw, ["train.epochs=21", "train.loss=l1", "quantize.variants.ptq8.percentile=99.9"])
    assert out["train"] == {"epochs": 21, "lr": 0.002, "loss": "l1"}
    assert out["quantize"]["variants"]["ptq8"]["percentile"] == 99.9


@pytest.mark.parametrize("assignment, message", [
    ("trainepochs", "expected section.key=value"),
    ("train.epochs=many", "train.epochs = 'many'"),
    ("train.epoch=3", "train.epoch"),
])
def test_a_bad_override_names_the_key_and_trains_nothing(tmp_path, capsys, assignment, message):
    for name in ("prepared", "validate.json", "baseline.json"):
        (tmp_path / name).mkdir() if name == "prepared" else (tmp_path / name).write_text("{}")
    params = tmp_path / "params.yaml"
    with open("params.yaml") as f:
        params.write_text(yaml.safe_dump(yaml.safe_load(f)))
    with pytest.raises(SystemExit) as exit_:
        main(["--set", assignment, "--params", str(params), "--out", str(tmp_path / "runs"),
              "--data", str(tmp_path / "prepared"), "--validated", str(tmp_path / "validate.json"),
              "--baseline", str(tmp_path / "baseline.json")])
    assert message in str(exit_.value)
    assert not (tmp_path / "runs").exists()


def test_checkpoints_are_scored_per_image_in_one_pass_and_as_a_self_ensemble(tmp_path, capsys):
    from benchmarks.seed_spread import per_image_psnr, print_table
    from greenpipe.data.prepared import load_split
    from tests.workspace import make_checkpoint, make_prepared

    data = make_prepared(tmp_path / "prepared")
    ckpt = make_checkpoint(tmp_path / "model")
    val = [(p.name, *p.load()) for p in load_split(data, "val")]
    single, ensemble = per_image_psnr(ckpt, val), per_image_psnr(ckpt, val, 8)
    assert len(single) == len(ensemble) == len(val) and single != ensemble
    print_table("x8", [name for name, *_ in val], [20.0] * len(val), [0], [ensemble])
    out = capsys.readouterr().out
    assert "seed 0" in out and f"{sum(ensemble) / len(ensemble):.3f}" in out and "seeds beating NLM" in out
