"""Stage validate: passes on good prepared data, names every bad file otherwise."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from greenpipe.recipes.denoise.ingest import ingest
from greenpipe.recipes.denoise.table import build_table
from greenpipe.recipes.denoise.validate import validate
from greenpipe.validate import ValidationFailed
from tasks.validate import main
from tests.data.fixtures import make_params, write_images, write_params, write_png16_rgb


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A prepared dataset made by ingest: 4 train and 2 val samples of 80x72 px."""
    tmp = tmp_path_factory.mktemp("good")
    write_images(tmp / "raw" / "clean", ["a", "b", "c", "d", "e", "f"], height=80, width=72)
    ingest(make_params(ingest={"max_side": 96, "val_sources": ["b", "e"]}), tmp / "raw", tmp / "prepared")
    return tmp / "prepared"


@pytest.fixture
def data(good, tmp_path):
    return shutil.copytree(good, tmp_path / "prepared")


PARAMS = make_params()


def test_good_data_passes_and_writes_reports(data, tmp_path):
    metrics = validate(PARAMS, data, tmp_path / "reports")
    assert metrics["success"] is True
    assert (metrics["train_samples"], metrics["val_samples"], metrics["files"]) == (4, 2, 12)
    assert metrics["bad_files"] == 0 and set(metrics["failures"].values()) == {0}
    result = json.loads((tmp_path / "reports" / "result.json").read_text())
    assert result["success"] is True and len(result["results"]) == len(metrics["failures"])
    assert "PASSED" in (tmp_path / "reports" / "index.html").read_text()
    assert (tmp_path / "reports" / "failures.txt").read_text() == ""


def test_the_same_data_writes_the_same_reports(data, tmp_path):
    # DVC caches the reports: a rerun on unchanged data must not look like a changed output.
    first, second = tmp_path / "first", tmp_path / "second"
    validate(PARAMS, data, first)
    validate(PARAMS, data, second)
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second.iterdir())
    for path in first.iterdir():
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name


def test_table_describes_each_file(data):
    table = build_table(data)
    noisy = table[table["role"] == "noisy"]
    assert len(table) == 12 and set(table["decode_error"]) == {""}
    assert set(table["channels"]) == {3} and set(table["bit_depth"]) == {8}
    assert noisy["noisy_psnr"].between(10, 48).all() and (noisy["noise_sigma"] > 0).all()
    assert table["sha256"].str.len().eq(64).all() and table["pair_match"].all()


def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])


def _garbage(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def _shrink(path):
    Image.open(path).crop((0, 0, 64, 64)).save(path)


def _grey(path):
    Image.open(path).convert("L").save(path)


def _to_16_bit(path):
    write_png16_rgb(path, np.asarray(Image.open(path)).astype(np.uint16) * 257)


# (case, file to damage, damage, expectation it must fail)
CASES = [
    ("truncated PNG", "train/clean/a.png", _truncate, "decodes"),
    ("corrupt PNG", "val/noisy/b.png", _garbage, "decodes"),
    ("pair size mismatch", "train/noisy/c.png", _shrink, "pair_size"),
    ("missing GT", "train/clean/d.png", lambda p: p.unlink(), "pair_complete"),
    ("grayscale", "train/noisy/a.png", _grey, "channels"),
    ("16-bit PNG", "val/clean/e.png", _to_16_bit, "bit_depth"),
]


@pytest.mark.parametrize("case, file, damage, check", CASES, ids=[c[0] for c in CASES])
def test_each_bad_input_fails_naming_the_file(data, tmp_path, case, file, damage, check):
    damage(data / file)
    with pytest.raises(ValidationFailed) as info:
        validate(PARAMS, data, tmp_path / "reports")
    # The missing clean file is reported through the noisy file that lacks it.
    named = file.replace("/clean/", "/noisy/") if case == "missing GT" else file
    lines = [line for line in str(info.value).splitlines() if f"{data / named}:" in line]
    assert len(lines) == 1 and f"{check}: observed" in lines[0] and "expected" in lines[0], str(info.value)
    assert info.value.metrics["success"] is False and info.value.metrics["failures"][check] >= 1
    assert f"{data / named}:" in (tmp_path / "reports" / "failures.txt").read_text()
    assert "FAILED" in (tmp_path / "reports" / "index.html").read_text()


def test_duplicate_image_across_train_and_val_is_leakage(data, tmp_path):
    for role in ("clean", "noisy"):
        shutil.copyfile(data / f"train/{role}/a.png", data / f"val/{role}/b.png")
    with pytest.raises(ValidationFailed) as info:
        validate(PARAMS, data, tmp_path / "reports")
    message = str(info.value)
    assert f"{data / 'val/clean/b.png'}: no_leakage: observed same pixels as train/clean/a.png" in message
    assert info.value.metrics["failures"]["no_leakage"] == 1
    # The same duplicate passes when params allow one.
    allowing = make_params(validate={"max_val_train_overlap": 1})
    assert validate(allowing, data, tmp_path / "reports")["success"] is True


def test_every_bad_file_is_listed_with_stray_and_missing_files(data, tmp_path):
    _truncate(data / "train/clean/a.png")
    _grey(data / "val/noisy/e.png")
    shutil.copyfile(data / "train/noisy/c.png", data / "train/noisy/stray.png")
    (data / "val/noisy/b.png").unlink()
    shutil.copyfile(data / "train/clean/d.png", data / "train/noisy/d.png")  # noisy == clean: PSNR inf
    with pytest.raises(ValidationFailed) as info:
        validate(PARAMS, data, tmp_path / "reports")
    message = str(info.value)
    for file, check in [
        ("train/clean/a.png", "decodes"),
        ("val/noisy/e.png", "channels"),
        ("train/noisy/stray.png", "in_manifest"),
        ("val/noisy/b.png", "decodes"),
        ("val/clean/b.png", "pair_complete"),
        ("train/noisy/d.png", "noisy_psnr"),
    ]:
        assert (
            f"{data / file}: " in message and check in message.split(f"{data / file}: ")[1].splitlines()[0]
        ), file
    assert info.value.metrics["bad_files"] == 6


def test_too_few_samples_fails_naming_the_split(data, tmp_path):
    with pytest.raises(ValidationFailed) as info:
        validate(make_params(validate={"min_train": 5}), data, tmp_path / "reports")
    assert f"{data / 'train'}: min_train: observed 4 samples; expected >= 5 train samples" in str(info.value)


def test_main_writes_metrics_and_exits_2_on_failure(data, tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml")
    argv = ["--data", str(data), "--reports", str(tmp_path / "r"), "--metrics", str(tmp_path / "m.json"),
            "--params", str(params)]  # fmt: skip
    main(argv)
    assert json.loads((tmp_path / "m.json").read_text())["success"] is True

    _grey(data / "train/clean/c.png")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert json.loads((tmp_path / "m.json").read_text())["failures"]["channels"] == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "channels: observed 1 channel(s)" in err

    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "nope"), *argv[2:]])
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "success": False,
        "error": f"{tmp_path / 'nope'}: no such folder; run the ingest stage first (dvc repro ingest)",
    }
