"""The segment recipe's data: generated scenes, the Cityscapes reader, ingest, validation (real PNG files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from greenpipe.data.builtin import materialize
from greenpipe.errors import DataError, ParamsError
from greenpipe.recipes.segment.data import IGNORE, class_lut, read_label, split_samples, write_label
from greenpipe.recipes.segment.ingest import ingest
from greenpipe.recipes.segment.scenes import SCENE_CLASSES, draw_scene, load_photos
from greenpipe.recipes.segment.validate import validate
from greenpipe.validate import ValidationFailed
from tests.recipes.segment.fixtures import segment_params, write_cityscapes


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("builtin")
    materialize(out)
    return out / "clean"


@pytest.fixture(scope="module")
def prepared(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "prepared"
    ingest(segment_params(), {"photos": photos, "out": out})
    return out


def test_scenes_are_deterministic_and_draw_street_classes(photos):
    textures = load_photos(photos)
    a = draw_scene(np.random.default_rng(3), 64, 128, textures)
    b = draw_scene(np.random.default_rng(3), 64, 128, textures)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    img, label = a
    assert img.shape == (64, 128, 3) and label.shape == (64, 128) and label.max() < len(SCENE_CLASSES)
    for cls in ("road", "sky", "building", "car"):
        assert (label == SCENE_CLASSES.index(cls)).any(), cls
    # labels are exact: every pixel of a class takes that class's texture layer, so a class's pixels
    # differ from its neighbours' statistics (road is the grey gravel, sky the blue gradient)
    road, sky = img[label == SCENE_CLASSES.index("road")], img[label == SCENE_CLASSES.index("sky")]
    assert sky[:, 2].mean() > road[:, 2].mean()


def test_builtin_ingest_writes_the_prepared_layout(prepared):
    train, val = split_samples(prepared, "train"), split_samples(prepared, "val")
    assert (len(train), len(val)) == (4, 2)
    img, label = train[0].load()
    assert img.shape == (64, 128, 3) and label.shape == (64, 128)


def test_cityscapes_label_ids_map_to_the_selected_train_classes(tmp_path):
    lut = class_lut(("road", "car", "sky"))
    # road (7) -> 0, car (26) -> 1, sky (23) -> 2; building (11, not selected), unlabeled (0),
    # caravan (29, no train id) and license plate (-1 = 255) -> ignore
    assert [int(lut[i]) for i in (7, 26, 23, 11, 0, 29, 255)] == [0, 1, 2, IGNORE, IGNORE, IGNORE, IGNORE]
    ids = np.array([[7, 7, 26, 26], [23, 11, 0, 29]] * 16, np.uint8)  # 32 x 4
    ids = np.repeat(ids, 8, axis=1)  # 32 x 32
    for split in ("train", "val"):
        write_cityscapes(tmp_path / "cs", split, "aachen", f"aachen_000000_00001{split == 'val'}", ids)
    params = segment_params(data={"source": "cityscapes", "cityscapes_root": str(tmp_path / "cs"),
                                  "classes": ["road", "car", "sky"], "size": [32, 32]})
    metrics = ingest(params, {"photos": tmp_path, "out": tmp_path / "out"})
    assert metrics["class_pixels"] == {"road": 2 * 16 * 16, "car": 2 * 16 * 16, "sky": 2 * 16 * 8}  # both splits
    label = split_samples(tmp_path / "out", "val")[0].load()[1]
    assert label[0, 0] == 0 and label[0, 16] == 1 and label[1, 0] == 2 and label[1, 8] == IGNORE


def test_cityscapes_missing_label_file_is_named(tmp_path):
    _, label = write_cityscapes(tmp_path / "cs", "train", "bonn", "bonn_000001_000019", np.full((8, 8), 7))
    label.unlink()
    params = segment_params(data={"source": "cityscapes", "cityscapes_root": str(tmp_path / "cs")})
    with pytest.raises(DataError, match="bonn_000001_000019_gtFine_labelIds.png: label file missing"):
        ingest(params, {"photos": tmp_path, "out": tmp_path / "out"})
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_cityscapes_needs_its_root_and_known_classes():
    with pytest.raises(ParamsError, match="segment.data"):
        segment_params(data={"source": "cityscapes"})
    with pytest.raises(ParamsError, match="segment.data.classes"):
        segment_params(data={"classes": ["road", "tree"]})


@pytest.fixture
def data(prepared, tmp_path) -> Path:
    return shutil.copytree(prepared, tmp_path / "prepared")


def _validate(data: Path, tmp_path: Path) -> dict:
    return validate(segment_params(validate={"min_train": 1}), {"data": data, "reports": tmp_path / "reports"})


def test_good_data_passes(data, tmp_path):
    metrics = _validate(data, tmp_path)
    assert metrics["success"] and (metrics["train_samples"], metrics["val_samples"]) == (4, 2)
    assert (tmp_path / "reports" / "index.html").exists()


def _label(data: Path) -> Path:
    return split_samples(data, "train")[0].label


@pytest.mark.parametrize("check, break_it, says", [
    ("label_ids", lambda p: write_label(p, np.where(read_label(p) == 0, 40, read_label(p))), "values 40"),
    ("label_size", lambda p: write_label(p, read_label(p)[:32]), "128x64 vs label 128x32"),
    ("label_present", lambda p: p.unlink(), "no label file"),
    ("class_histogram", lambda p: write_label(p, np.full_like(read_label(p), IGNORE)), "every pixel is ignore"),
])
def test_each_bad_label_fails_its_own_named_check(data, tmp_path, check, break_it, says):
    label = _label(data)
    break_it(label)
    with pytest.raises(ValidationFailed) as err:
        _validate(data, tmp_path)
    failed = {k for k, v in err.value.metrics["failures"].items() if v}
    assert failed == {check}
    assert f"{check}: observed" in str(err.value) and says in str(err.value) and label.stem in str(err.value)


def test_an_rgb_label_is_refused_by_the_reader(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="8-bit single-channel"):
        read_label(path)
