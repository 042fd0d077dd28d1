"""Layout detection and sample listing on tiny temp layouts (greenpipe.data.readers)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from greenpipe.data.readers import LAYOUTS, detect_layout, load_rgb, read_samples
from greenpipe.errors import DataError
from tests.data.fixtures import write_images


def _sidd(
    base,
    scenes=(
        "0001_001_S6_00100_00060_3200_L",
        "0002_001_GP_00800_00350_5500_N",
        "0003_002_IP_00100_00100_3200_N",
    ),
):
    for scene in scenes:
        write_images(base / scene, ["GT_SRGB_010", "NOISY_SRGB_010"], 16, 16)
    return base


@pytest.mark.parametrize("nested", [True, False], ids=["Data-folder", "scenes-at-root"])
def test_sidd_pairs_gt_with_noisy_and_groups_by_scene_number(tmp_path, nested):
    _sidd(tmp_path / "Data" if nested else tmp_path)
    assert detect_layout(tmp_path) == "sidd"
    samples = read_samples(tmp_path, "sidd")
    assert [s.name for s in samples] == [
        "0001_001_S6_00100_00060_3200_L_010",
        "0002_001_GP_00800_00350_5500_N_010",
        "0003_002_IP_00100_00100_3200_N_010",
    ]
    # Folders 0001 and 0002 photograph the same scene 001: one group, never split apart.
    assert [s.group for s in samples] == ["scene001", "scene001", "scene002"]
    for s in samples:
        assert s.clean.name == "GT_SRGB_010.png" and s.noisy.name == "NOISY_SRGB_010.png"
        assert s.clean.parent == s.noisy.parent


def test_sidd_file_without_its_pair_is_named(tmp_path):
    _sidd(tmp_path / "Data")
    lonely = tmp_path / "Data" / "0001_001_S6_00100_00060_3200_L" / "NOISY_SRGB_011.png"
    write_images(lonely.parent, ["NOISY_SRGB_011"], 16, 16)
    with pytest.raises(DataError, match="NOISY_SRGB_011.png: no GT_SRGB_011"):
        read_samples(tmp_path, "sidd")


def test_paired_matches_clean_and_noisy_by_name(tmp_path):
    write_images(tmp_path / "clean", ["a", "b"], 16, 16)
    write_images(tmp_path / "noisy", ["a", "b"], 16, 16, seed=1)
    assert detect_layout(tmp_path) == "paired"
    samples = read_samples(tmp_path, "paired")
    assert [(s.name, s.group, s.clean.parent.name, s.noisy.parent.name) for s in samples] == [
        ("a", "a", "clean", "noisy"),
        ("b", "b", "clean", "noisy"),
    ]


def test_paired_noisy_without_clean_is_named_as_missing_ground_truth(tmp_path):
    write_images(tmp_path / "clean", ["a"], 16, 16)
    write_images(tmp_path / "noisy", ["a", "orphan"], 16, 16)
    with pytest.raises(DataError, match=r"noisy/orphan.png: no clean/orphan.\* \(missing ground truth\)"):
        read_samples(tmp_path, "paired")


@pytest.mark.parametrize("sub", ["clean", ""], ids=["clean-folder", "flat-folder"])
def test_clean_only_samples_have_no_noisy(tmp_path, sub):
    write_images(tmp_path / sub if sub else tmp_path, ["x", "y", "z"], 16, 16)
    assert detect_layout(tmp_path) == "clean"
    samples = read_samples(tmp_path, "clean")
    assert [(s.name, s.group, s.noisy) for s in samples] == [
        ("x", "x", None),
        ("y", "y", None),
        ("z", "z", None),
    ]


def test_builtin_is_a_clean_folder_with_sources(tmp_path):
    write_images(tmp_path / "clean", ["coffee"], 16, 16)
    (tmp_path / "SOURCES.json").write_text("[]")
    assert detect_layout(tmp_path) == "builtin"
    assert [s.name for s in read_samples(tmp_path, "builtin")] == ["coffee"]


def test_unknown_layout_names_the_folder_and_every_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "notes.txt" in message
    for name in LAYOUTS:
        assert f"  {name} " in message
    assert "GT_SRGB" in message and "noisy/" in message


def test_missing_root_says_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match="greenpipe data builtin"):
        detect_layout(tmp_path / "nope")


def test_same_stem_twice_is_refused(tmp_path):
    write_images(tmp_path / "clean", ["a"], 16, 16)
    Image.open(tmp_path / "clean" / "a.png").save(tmp_path / "clean" / "a.jpg")
    with pytest.raises(DataError, match="share the name 'a'"):
        read_samples(tmp_path, "clean")


def test_load_rgb_keeps_16_bit_grey_and_names_a_corrupt_file(tmp_path):
    grey = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    rgb = load_rgb(tmp_path / "g16.png")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[..., 1], grey / 65535.0, atol=1e-6)

    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="bad.png: cannot decode"):
        load_rgb(tmp_path / "bad.png")
