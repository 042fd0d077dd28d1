"""Stage ingest on tiny temp datasets: prepared layout, whole-group splits, atomic replace."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from greenpipe.data.prepared import load_split
from greenpipe.errors import DataError
from greenpipe.io import read_image
from greenpipe.recipes.denoise.ingest import BUILTIN_TRAIN_REALISATIONS, ingest, split_groups
from tasks.ingest import main
from tests.data.fixtures import make_params, write_images, write_params

NAMES = ["a", "b", "c", "d", "e", "f"]
SHOT = (0.0005, 0.004)  # params.yaml ingest.noise.shot


def _params(**ingest_values):
    return make_params(ingest={"max_side": 64, "val_sources": [], **ingest_values})


def _files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def raw(tmp_path):
    """Six clean-only images, one larger than max_side and none a multiple of 8."""
    write_images(tmp_path / "raw" / "clean", NAMES[:5], height=61, width=59)
    write_images(tmp_path / "raw" / "clean", NAMES[5:], height=150, width=100, seed=1)
    return tmp_path / "raw"


def test_clean_folder_becomes_the_prepared_layout(raw, tmp_path):
    out = tmp_path / "prepared"
    metrics = ingest(_params(), raw, out)

    manifest = json.loads((out / "manifest.json").read_text())
    rows = manifest["samples"]
    assert manifest["layout"] == metrics["layout"] == "clean"
    assert {r["name"] for r in rows} == set(NAMES)
    assert manifest["splits"] == {"train": metrics["train"]["samples"], "val": metrics["val"]["samples"]}
    assert metrics["train"]["samples"] >= 1 and metrics["val"]["samples"] >= 1
    for row in rows:
        clean = read_image(out / row["split"] / "clean" / f"{row['name']}.png")
        noisy = read_image(out / row["split"] / "noisy" / f"{row['name']}.png")
        assert clean.shape == noisy.shape == (row["height"], row["width"], 3)
        assert row["height"] % 8 == 0 and row["width"] % 8 == 0
        assert max(row["height"], row["width"]) <= 64
        assert SHOT[0] <= row["noise"]["shot"] <= SHOT[1]
        assert not np.array_equal(clean, noisy)
    big = next(r for r in rows if r["name"] == "f")
    assert (big["height"], big["width"]) == (64, 40)  # 150x100 -> 64x43 (aspect kept) -> 64x40
    for split in ("train", "val"):
        assert 10 < metrics[split]["noisy_psnr"] < 48
        assert len(load_split(out, split)) == metrics[split]["samples"]
    # Nothing else is left beside the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "raw"]


def test_groups_never_span_splits_and_val_sources_are_honoured(tmp_path):
    # Paired data where several samples share a group would be SIDD; here the
    # group rule is tested directly, then val_sources end to end.
    split, rule = split_groups(["a", "a", "b", "c", "c", "d"], (), 0.25, seed=0)
    assert rule == "seeded" and set(split) == {"a", "b", "c", "d"}
    assert sum(s == "val" for s in split.values()) == 1
    assert split_groups(["a", "b", "c"], ("b",), 0.25, 0) == (
        {"a": "train", "b": "val", "c": "train"},
        "val_sources",
    )
    # A name that is not there, or holding everything out, falls back to the seeded split.
    assert split_groups(["a", "b", "c"], ("zzz",), 0.25, 0)[1] == "seeded"
    assert split_groups(["a", "b"], ("a", "b"), 0.25, 0)[1] == "seeded"
    with pytest.raises(DataError, match="at least one more image"):
        split_groups(["a"], (), 0.25, 0)

    write_images(tmp_path / "raw", NAMES, 32, 32)
    metrics = ingest(_params(val_sources=["b", "e"]), tmp_path / "raw", tmp_path / "out")
    assert metrics["split_by"] == "val_sources"
    assert {p.name for p in load_split(tmp_path / "out", "val")} == {"b", "e"}


def test_sidd_scenes_stay_whole_and_real_noise_is_cropped_not_resized(tmp_path):
    raw = tmp_path / "raw" / "Data"
    for k, scene in enumerate(["0001_001_S6_00100_00060_3200_L", "0002_001_IP_00100_00060_3200_L",
                               "0003_002_S6_00100_00060_3200_L", "0004_003_S6_00100_00060_3200_L"]):  # fmt: skip
        write_images(raw / scene, ["GT_SRGB_010"], 80, 96, seed=k)
        write_images(raw / scene, ["NOISY_SRGB_010"], 80, 96, seed=k + 10)
    out = tmp_path / "out"
    ingest(_params(val_fraction=0.5), tmp_path / "raw", out)
    rows = json.loads((out / "manifest.json").read_text())["samples"]
    split_of_group = {}
    for row in rows:
        assert split_of_group.setdefault(row["group"], row["split"]) == row["split"]
        assert row["noise"] is None and (row["height"], row["width"]) == (64, 64)
    assert sum(r["group"] == "scene001" for r in rows) == 2
    # The noisy file is the raw noisy image, centre-cropped, untouched otherwise.
    row = rows[0]
    scene = row["name"].rsplit("_", 1)[0]
    src = np.asarray(Image.open(raw / scene / "NOISY_SRGB_010.png"))[8:72, 16:80]
    got = np.asarray(Image.open(out / row["split"] / "noisy" / f"{row['name']}.png"))
    np.testing.assert_array_equal(got, src)


def test_builtin_layout_makes_several_realisations_per_train_image(tmp_path):
    write_images(tmp_path / "raw" / "clean", NAMES[:4], 32, 32)
    (tmp_path / "raw" / "SOURCES.json").write_text("[]")
    metrics = ingest(_params(val_sources=["a"]), tmp_path / "raw", tmp_path / "out")
    assert metrics["layout"] == "builtin"
    assert metrics["val"] == {"samples": 1, "groups": 1, "noisy_psnr": metrics["val"]["noisy_psnr"]}
    assert metrics["train"]["samples"] == 3 * BUILTIN_TRAIN_REALISATIONS
    train = load_split(tmp_path / "out", "train")
    assert {p.name for p in train if p.group == "b"} == {f"b_n{k}" for k in range(BUILTIN_TRAIN_REALISATIONS)}
    assert [p.name for p in load_split(tmp_path / "out", "val")] == ["a_n0"]
    noisy = [read_image(p.noisy) for p in train if p.group == "b"]
    assert not np.array_equal(noisy[0], noisy[1])  # different noise draws


def test_ingest_is_deterministic(raw, tmp_path):
    ingest(_params(), raw, tmp_path / "one")
    ingest(_params(), raw, tmp_path / "two")
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    ingest(make_params(base={"seed": 1}, ingest={"max_side": 64, "val_sources": []}), raw, tmp_path / "three")
    assert _files(tmp_path / "one") != _files(tmp_path / "three")


def test_failure_leaves_the_previous_output_intact(raw, tmp_path):
    out = tmp_path / "prepared"
    ingest(_params(), raw, out)
    before = _files(out)
    (raw / "clean" / "zz_truncated.png").write_bytes((raw / "clean" / "a.png").read_bytes()[:60])
    with pytest.raises(DataError, match="zz_truncated.png: cannot decode"):
        ingest(_params(), raw, out)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "raw"]


def test_main_writes_metrics_and_exits_2_with_a_message(raw, tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", ingest={"max_side": 64, "val_sources": []})
    main(
        [
            "--raw",
            str(raw),
            "--out",
            str(tmp_path / "out"),
            "--metrics",
            str(tmp_path / "m.json"),
            "--params",
            str(params),
        ]
    )
    assert json.loads((tmp_path / "m.json").read_text())["layout"] == "clean"

    with pytest.raises(SystemExit) as exit_info:
        main(["--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"), "--metrics", str(tmp_path / "m2.json"),
              "--params", str(params)])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope: no such folder" in err
