"""Camera-motion labels say what the frames do; the Jester layout and video files read back."""

import numpy as np
import pytest

from greenpipe.data.video import (
    CLASSES,
    load_clip,
    materialize_builtin,
    read_labels,
    read_split,
    read_video,
    sample_indices,
    trajectory,
    write_video,
)
from greenpipe.errors import DataError
from tests.video.conftest import real_clip


def _shift_between(a: np.ndarray, b: np.ndarray, r: int = 16) -> tuple[int, int]:
    """The (dx, dy) with b(x, y) ~ a(x + dx, y + dy): how far the window moved, in px (brute force)."""
    a, b = a.astype(np.float32).mean(-1), b.astype(np.float32).mean(-1)
    best, arg = np.inf, (0, 0)
    h, w = a.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ya, xa = slice(max(dy, 0) + r, h - r + min(dy, 0)), slice(max(dx, 0) + r, w - r + min(dx, 0))
            yb, xb = slice(max(-dy, 0) + r, h - r + min(-dy, 0)), slice(max(-dx, 0) + r, w - r + min(-dx, 0))
            err = np.mean((a[ya, xa] - b[yb, xb]) ** 2)
            if err < best:
                best, arg = err, (dx, dy)
    return arg


def _zoom_between(a: np.ndarray, b: np.ndarray) -> float:
    """The centred magnification m with b ~ a scaled by m (m > 1: the scene grows, the camera zooms in)."""
    import cv2

    s = a.shape[0]
    errs = {}
    for m in np.linspace(0.8, 1.25, 19):
        warped = cv2.warpAffine(a, np.array([[m, 0, (1 - m) * s / 2], [0, m, (1 - m) * s / 2]]), (s, s))
        c = slice(s // 4, 3 * s // 4)
        errs[m] = np.mean((warped[c, c].astype(np.float32) - b[c, c].astype(np.float32)) ** 2)
    return min(errs, key=errs.get)


@pytest.mark.parametrize("label,sign", [("pan_right", (1, 0)), ("pan_left", (-1, 0)), ("pan_down", (0, 1)),
                                        ("pan_up", (0, -1)), ("static", (0, 0))])
def test_pan_labels_match_the_motion_in_the_frames(label, sign):
    clip = real_clip(label, n_frames=5, size=64, seed=3)
    moves = [_shift_between(clip[t], clip[t + 1]) for t in range(4)]
    for dx, dy in moves:
        assert (np.sign(dx), np.sign(dy)) == sign, (label, moves)


@pytest.mark.parametrize("label,grows", [("zoom_in", True), ("zoom_out", False)])
def test_zoom_labels_match_the_scale_change(label, grows):
    clip = real_clip(label, n_frames=4, size=64, seed=4)
    for t in range(3):
        m = _zoom_between(clip[t], clip[t + 1])
        assert (m > 1.0) == grows and abs(m - 1.0) > 0.02, (label, t, m)


def test_pan_per_frame_is_the_displacement_per_frame():
    import cv2

    from greenpipe.data.builtin import locate, sources
    from greenpipe.data.video import draw_scene, photo_side, shoot

    record = next(r for r in sources() if r["name"] == "astronaut")
    img = cv2.cvtColor(cv2.imread(str(locate(record))), cv2.COLOR_BGR2RGB)
    side = photo_side(64, 4, pan=(0.15, 0.15), zoom=(1.1, 1.1))
    img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    scene = draw_scene(img.shape, 64, np.random.default_rng(0), 4, pan=(0.15, 0.15), zoom=(1.1, 1.1))
    clip = shoot(img, scene, "pan_right", 4, 64)
    for t in range(3):  # 0.15 of the frame per frame: 9.6 px at 64 px
        assert _shift_between(clip[t], clip[t + 1])[0] in (9, 10)


def test_every_class_has_the_same_middle_window():
    # Per-frame positions and scales are symmetric about the middle frame: a single frame cannot tell the class.
    for label in CLASSES:
        w = trajectory(label, 5, (100.0, 80.0), 60.0, 20.0, 1.5)
        assert (w[2].x, w[2].y, w[2].side) == (100.0, 80.0, 60.0)
        if label != "static":
            assert w[0] != w[-1]


def test_unknown_label_is_refused():
    with pytest.raises(DataError, match="pan_left"):
        trajectory("tilt", 4, (0.0, 0.0), 10.0, 1.0, 1.2)


def _photos(tmp_path, names=("a", "b", "c")):
    import cv2

    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    for n in names:
        img = cv2.GaussianBlur(rng.integers(0, 255, (120, 150, 3), dtype=np.uint8), (0, 0), 2)
        cv2.imwrite(str(d / f"{n}.png"), img)
    return d


def test_builtin_writes_jester_layout_split_by_photograph(tmp_path):
    out = tmp_path / "clips"
    summary = materialize_builtin(_photos(tmp_path), out, size=32, n_frames=4, train_per_class=2,
                                  val_per_class=1, val_sources=("c",), seed=0)
    assert read_labels(out) == list(CLASSES)
    train, val = read_split(out, "train"), read_split(out, "val")
    assert len(train) == 2 * 2 * len(CLASSES) and len(val) == len(CLASSES)
    assert summary["train_sources"] == ["a", "b"] and summary["val_sources"] == ["c"]
    assert not {r.id.split("-")[0] for r in train} & {r.id.split("-")[0] for r in val}
    clip = load_clip(train[0], 4, 32)
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    assert load_clip(train[0], 2, 16).shape == (2, 16, 16, 3)  # resampled in time and space
    assert (out / "SOURCES.json").exists()
    assert len(list((out / "videos").glob("*.avi"))) == len(train) + len(val)  # one file per clip


def test_dataset_digest_changes_with_any_clip_and_the_stages_depend_on_it(tmp_path):
    """The later video stages depend on dataset.json's digest instead of walking the clip folder."""
    from pathlib import Path

    import yaml

    from greenpipe.video.env import DATASET_FILE, dataset_digest

    out = tmp_path / "clips"
    materialize_builtin(_photos(tmp_path), out, size=32, n_frames=4, train_per_class=1, val_per_class=1,
                        val_sources=("c",), seed=0)
    before = dataset_digest(out, clips=True)
    assert before["files"] == len(list(out.rglob("*"))) - 1  # every file but the videos folder
    (out / DATASET_FILE).write_text("{}")  # the digest's own file is not in it
    assert dataset_digest(out, clips=True) == before
    clip = sorted((out / "videos").glob("*.avi"))[-1]
    clip.write_bytes(clip.read_bytes()[:-1] + b"x")
    assert dataset_digest(out, clips=True)["sha256"] != before["sha256"]
    lists = dataset_digest(out, clips=False)
    assert lists["files"] == 3 and "not the videos" in lists["of"]  # labels, train and validation lists

    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
    readers = {name: st.get("do", st) for name, st in stages.items()
               if "--data artifacts/video/data" in st.get("do", st)["cmd"]}
    assert len(readers) >= 4
    for name, st in readers.items():
        assert "artifacts/video/data/dataset.json" in st["deps"] and "artifacts/video/data" not in st["deps"], name


def test_clip_video_files_are_lossless(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)  # worst case for a codec
    write_video(tmp_path / "clip.avi", frames)
    np.testing.assert_array_equal(read_video(tmp_path / "clip.avi"), frames)


def test_val_source_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(DataError, match="nope"):
        materialize_builtin(_photos(tmp_path), tmp_path / "o", size=32, n_frames=4, train_per_class=1,
                            val_per_class=1, val_sources=("nope",), seed=0)


def test_something_something_csv_with_video_files(tmp_path):
    import cv2

    frames = real_clip("pan_left", n_frames=6, size=32)
    root = tmp_path / "ssv"
    (root / "videos").mkdir(parents=True)
    writer = cv2.VideoWriter(str(root / "videos" / "17.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 12, (32, 32))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    (root / "something-labels.csv").write_text("Moving something left\nMoving something right\n")
    (root / "something-train.csv").write_text("17;Moving something left\n")
    (root / "something-validation.csv").write_text("17,Moving something left\n")
    (ref,) = read_split(root, "train")
    assert ref.label == 0 and ref.path.suffix == ".avi"
    decoded = read_video(ref.path)
    assert decoded.shape == (6, 32, 32, 3)
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 12  # MJPEG is lossy
    assert read_split(root, "val")[0].id == "17"


def test_missing_video_and_unknown_class_are_named(tmp_path):
    root = tmp_path / "j"
    (root / "frames" / "1").mkdir(parents=True)
    import cv2

    cv2.imwrite(str(root / "frames" / "1" / "00001.jpg"), np.zeros((8, 8, 3), np.uint8))
    (root / "x-labels.csv").write_text("Swiping Left\n")
    (root / "x-train.csv").write_text("1;Swiping Left\n2;Swiping Left\n")
    (root / "x-validation.csv").write_text("1;Swiping Up\n")
    with pytest.raises(DataError, match="video 2"):
        read_split(root, "train")
    with pytest.raises(DataError, match="Swiping Up"):
        read_split(root, "val")


def test_sample_indices_take_segment_centres():
    assert sample_indices(8, 4).tolist() == [1, 3, 5, 7]
    assert sample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
