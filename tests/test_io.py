"""greenpipe.io: an output directory is replaced whole, or not at all; PNGs written band by band."""

import os
import stat

import numpy as np
import pytest

from greenpipe.io import replacing_dir


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def out(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "old.txt").write_bytes(b"old")
    return out


def test_success_swaps_the_new_directory_in(out):
    with replacing_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "new.txt").write_bytes(b"new")
    assert _tree(out) == {"new.txt": b"new"}
    assert os.listdir(out.parent) == ["out"]  # neither the temporary nor the previous directory is left
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()


def test_failure_leaves_the_old_directory_and_no_temporary(out):
    with pytest.raises(RuntimeError, match="half-way"):
        with replacing_dir(out) as tmp:
            (tmp / "new.txt").write_bytes(b"new")
            raise RuntimeError("half-way")
    assert _tree(out) == {"sub/old.txt": b"old"}
    assert os.listdir(out.parent) == ["out"]


def test_a_failed_swap_puts_the_old_directory_back(out, monkeypatch):
    import greenpipe.io

    real = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(greenpipe.io.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        with replacing_dir(out) as tmp:
            (tmp / "new.txt").write_bytes(b"new")
    assert _tree(out) == {"sub/old.txt": b"old"}
    assert os.listdir(out.parent) == ["out"]


def test_a_missing_output_and_its_parents_are_created(tmp_path):
    out = tmp_path / "a" / "b"
    with replacing_dir(out) as tmp:
        (tmp / "x").write_bytes(b"x")
    assert _tree(out) == {"x": b"x"}


def test_leftovers_of_a_killed_writer_are_removed(out):
    (out.parent / ".out.tmp-killed").mkdir()
    (out.parent / ".out.old-killed").mkdir()
    with replacing_dir(out):
        pass
    assert os.listdir(out.parent) == ["out"] and _tree(out) == {}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_written_band_by_band_decodes_exactly(tmp_path, dtype, channels):
    import cv2

    from greenpipe.io import atomic_file, write_png_bands

    shape = (37, 53) if channels == 1 else (37, 53, channels)
    img = np.random.default_rng(channels).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    with atomic_file(tmp_path / "a.png") as f:
        write_png_bands(f, 37, 53, channels, dtype, (img[top : top + 10] for top in range(0, 37, 10)))
    back = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)  # BGR(A); gray + alpha as BGRA
    order = {1: [0], 2: [0, 3], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[channels]
    back = back if channels == 1 else back[..., order]
    assert back.dtype == dtype and np.array_equal(back, img)


def test_png_bands_short_of_the_height_leave_no_file(tmp_path):
    from greenpipe.io import atomic_file, write_png_bands

    img = np.zeros((10, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="PNG of 12 rows: the bands held 10"):
        with atomic_file(tmp_path / "a.png") as f:
            write_png_bands(f, 12, 4, 3, np.uint8, [img])
    assert list(tmp_path.iterdir()) == []
