"""`greenpipe denoise` loses nothing: every data-loss case tried with real image files and a real artifact."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from greenpipe.cli import app
from greenpipe.quant.stage import quantize_stage
from greenpipe.recipes.denoise import denoise_tiled
from greenpipe.recipes.denoise.folder import ORIGINALS, denoised_bands, model_geometry, read_native
from tasks.compile import compile_stage
from tests.stage_fixtures import make_workspace

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The fp32 artifact of an untrained tiny UNet (depth 2: multiple 4 px, reach 26 px), as the CLI runs it."""
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    quantize_stage(ws.params, "fp32", ws.model, ws.calib, ws.data, ws.root / "quant")
    compile_stage(ws.params, "fp32", "cpu", ws.root / "quant", ws.data, ws.root / "compiled")
    return ws.root / "compiled" / "model.onnx"


@pytest.fixture(scope="module")
def run(model):
    """The artifact as a function of a (1, 3, H, W) float32 batch, on ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _noisy(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    """A mid-gray image with noise, full range of ``dtype`` (as cv2 stores it: BGR(A))."""
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.45, 0.1, shape) * top, 0, top).astype(dtype)


def _denoise(src: Path, out: Path, model: Path, *extra: str):
    return runner.invoke(app, ["denoise", str(src), str(out), "--model", str(model), *extra])


def _said(result, text: str) -> bool:
    """Whether the CLI's output holds ``text``, whitespace aside (the console wraps long lines)."""
    return "".join(text.split()) in "".join(result.output.split())


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_colliding_names_are_refused_naming_both_before_any_work(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jpg", "a.png", "B.png", "b.tif", "c.png"):
        cv2.imwrite(str(src / name), _noisy((20, 24, 3)))
    result = _denoise(src, tmp_path / "out", model)
    assert result.exit_code == 2
    assert _said(result, "a.jpg and a.png -> a.png") and _said(result, "B.png and b.tif -> B.png")
    assert not _said(result, "c.png") and not (tmp_path / "out").exists()


@pytest.mark.parametrize("spelling", ["same", "symlink", "relative"])
def test_output_folder_that_is_the_input_folder_is_refused_inputs_untouched(model, tmp_path, spelling, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _noisy((20, 24, 3)))
    before = _files(src)
    if spelling == "symlink":
        (tmp_path / "link").symlink_to(src, target_is_directory=True)
        out = tmp_path / "link"
    elif spelling == "relative":
        monkeypatch.chdir(tmp_path)
        out = Path("in/../in")
    else:
        out = src
    result = _denoise(src, out, model)
    assert result.exit_code == 2 and _said(result, "is the input folder") and _said(result, "--in-place")
    assert _files(src) == before


def test_in_place_keeps_every_original_and_a_rerun_skips_what_is_done(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _noisy((20, 24, 3), seed=1))
    cv2.imwrite(str(src / "b.jpg"), _noisy((30, 18, 3), seed=2))
    before = _files(src)
    result = _denoise(src, src, model, "--in-place")
    assert result.exit_code == 0, result.output
    assert _files(src / ORIGINALS) == before  # byte for byte
    assert sorted(_files(src)) == ["a.png", "b.png"] and read_native(src / "b.png").shape == (30, 18, 3)
    assert _files(src)["a.png"] != before["a.png"]
    denoised = _files(src)
    result = _denoise(src, src, model, "--in-place")
    assert result.exit_code == 0 and _said(result, "skipped 2 already done")
    assert _files(src) == denoised and _files(src / ORIGINALS) == before  # not denoised twice, nothing lost


@pytest.mark.parametrize("name,shape", [("rgb16.png", (40, 36, 3)), ("rgba16.png", (40, 36, 4)),
                                        ("gray16.tif", (40, 36)), ("rgb16.tif", (40, 36, 3))])
def test_16_bit_images_keep_their_full_range_and_come_back_16_bit(model, run, tmp_path, name, shape):
    src = tmp_path / "in"
    src.mkdir()
    img = _noisy(shape, np.uint16)
    assert cv2.imwrite(str(src / name), img)
    result = _denoise(src, tmp_path / "out", model)
    assert result.exit_code == 0, result.output
    out = read_native(tmp_path / "out" / f"{Path(name).stem}.png")
    assert out.dtype == np.uint16 and out.shape == img.shape
    # What the model gives on the full-range input, in float: the file holds it to 16-bit precision.
    rgb = np.broadcast_to(img[..., None], (*shape, 3)) if len(shape) == 2 else img[..., 2::-1]
    geometry = model_geometry(model)
    expected = denoise_tiled(run, rgb.astype(np.float32) / 65535, 0, geometry.context, geometry.multiple)
    got = out[..., None] if len(shape) == 2 else out[..., 2::-1]
    expected = expected.mean(axis=-1, keepdims=True) if len(shape) == 2 else expected
    assert np.abs(got / 65535 - expected).max() <= 1.5 / 65535
    assert len(np.unique(got)) > 1000  # 16-bit steps, not 256 levels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_alpha_passes_through_untouched(model, tmp_path, dtype):
    src = tmp_path / "in"
    src.mkdir()
    img = _noisy((33, 47, 4), dtype)
    img[..., 3] = np.linspace(0, np.iinfo(dtype).max, 47).astype(dtype)[None, :]  # a ramp, transparent at left
    cv2.imwrite(str(src / "logo.png"), img)
    result = _denoise(src, tmp_path / "out", model)
    assert result.exit_code == 0, result.output
    out = read_native(tmp_path / "out" / "logo.png")
    assert out.dtype == dtype and out.shape == img.shape
    np.testing.assert_array_equal(out[..., 3], img[..., 3])


def test_a_tile_smaller_than_the_models_context_is_refused_at_once(model, tmp_path):
    """Before: --tile 64 with 32 px of overlap advanced 1 px per step (one model run per pixel)."""
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _noisy((90, 70, 3)))
    geometry = model_geometry(model)
    smallest = 2 * geometry.context + geometry.multiple
    assert (geometry.multiple, geometry.context, smallest) == (4, 28, 60)  # depth 2: reach 26 px
    result = _denoise(src, tmp_path / "out", model, "--tile", str(smallest - 1))
    assert result.exit_code == 2
    assert _said(result, f"--tile {smallest - 1}: too small") and _said(result, f"--tile {smallest} or more")
    assert not (tmp_path / "out").exists()
    assert _denoise(src, tmp_path / "out", model, "--tile", str(smallest)).exit_code == 0


def test_tiles_give_the_whole_image_result_with_the_real_model(model, run):
    """Context = the UNet's reach, tiles on its 2**depth grid: tiling changes nothing (8-bit, +-1 level)."""
    geometry = model_geometry(model)
    img = _noisy((150, 170, 3), seed=3)
    whole = np.concatenate(list(denoised_bands(run, img, 0, geometry)))
    tiled = np.concatenate(list(denoised_bands(run, img, 64, geometry)))  # step 8 px: hundreds of tiles
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    floats = _noisy((150, 170, 3), seed=4).astype(np.float32) / 255
    np.testing.assert_allclose(denoise_tiled(run, floats, 64, geometry.context, geometry.multiple),
                               denoise_tiled(run, floats, 0, geometry.context, geometry.multiple), atol=1e-4)


def test_an_output_folder_that_cannot_be_created_is_refused_before_work(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _noisy((20, 24, 3)))
    (tmp_path / "file").write_text("not a folder")
    result = _denoise(src, tmp_path / "file" / "out", model)
    assert result.exit_code == 2 and _said(result, "cannot write there") and "Traceback" not in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through folder permissions")
def test_a_read_only_output_folder_is_refused_before_work(model, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir(mode=0o555)
    cv2.imwrite(str(src / "a.png"), _noisy((20, 24, 3)))
    result = _denoise(src, out, model)
    assert result.exit_code == 2 and _said(result, "cannot write there (Permission denied)")
    assert list(out.iterdir()) == []


def _limit_file_size(limit: int):
    def set_limit():  # runs in the child: any write past `limit` bytes fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


def test_an_output_that_cannot_be_written_stops_the_run_leaves_nothing_partial_and_a_rerun_completes(
        model, tmp_path):
    """A real write failure mid-run: the CLI in a child process whose file size limit the second output exceeds."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "a_small.png"), _noisy((24, 24, 3), seed=5))
    cv2.imwrite(str(src / "b_big.png"), _noisy((300, 300, 3), seed=6))  # ~270 kB of PNG: over the limit
    cv2.imwrite(str(src / "c_small.png"), _noisy((24, 24, 3), seed=7))
    command = [sys.executable, "-m", "greenpipe.cli", "denoise", str(src), str(out), "--model", str(model)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    failed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                            preexec_fn=_limit_file_size(100_000))
    message = (failed.stdout + failed.stderr).replace("\n", "")  # unwrapped
    assert failed.returncode == 2, message
    assert "b_big.png: cannot write (File too large)" in message and "run the same command again" in message
    assert "Traceback" not in message
    assert sorted(p.name for p in out.iterdir()) == ["a_small.png"]  # no partial b_big.png, no temporary file
    assert read_native(out / "a_small.png").shape == (24, 24, 3)

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_small.png", "b_big.png", "c_small.png"]
    assert read_native(out / "b_big.png").shape == (300, 300, 3)


def test_too_little_free_space_is_refused_before_work(model, tmp_path, small_disk):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _noisy((400, 400, 3)))  # 480 kB uncompressed
    (small_disk / "filler").write_bytes(b"\0" * 700_000)
    result = _denoise(src, small_disk / "out", model)
    assert result.exit_code == 2 and _said(result, "MB free, but the 1 output(s) take up to 0.5 MB")
    assert list((small_disk / "out").iterdir()) == []


def test_a_disk_that_fills_mid_run_stops_it_with_one_message_and_a_rerun_completes(model, run, tmp_path,
                                                                                   small_disk):
    """Another writer fills the disk after the first image: a real ENOSPC on the second."""
    from greenpipe.errors import GreenpipeError
    from greenpipe.recipes.denoise.folder import check_output, denoise_folder, plan

    src, out = tmp_path / "in", small_disk / "out"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _noisy((24, 24, 3), seed=8))
    cv2.imwrite(str(src / "b.png"), _noisy((300, 300, 3), seed=9))
    jobs, _ = plan(src, out, False, frozenset({".png"}))
    check_output(out, jobs)

    def fill_after_first(items):
        for k, job in enumerate(items):
            if k == 1:
                with open(small_disk / "filler", "wb", buffering=0) as f:
                    try:
                        while True:
                            f.write(b"\0" * 4096)
                    except OSError:  # full
                        pass
            yield job

    geometry = model_geometry(model)
    with pytest.raises(GreenpipeError, match=r"b\.png: cannot write \(No space left on device\)"):
        denoise_folder(run, jobs, 0, geometry, progress=fill_after_first)
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no partial b.png, no temporary file
    assert read_native(out / "a.png").shape == (24, 24, 3)
    (small_disk / "filler").unlink()
    assert denoise_folder(run, jobs, 0, geometry) == []
    assert read_native(out / "b.png").shape == (300, 300, 3)


def test_a_negative_tile_is_refused(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _noisy((20, 24, 3)))
    result = _denoise(src, tmp_path / "out", model, "--tile", "-5")
    assert result.exit_code == 2 and _said(result, "--tile -5: too small")
    assert _said(result, "--tile 0 for whole images")
