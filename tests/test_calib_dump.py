"""calib_dump on the denoise recipe: one directory per declared boundary, arrays + manifest."""

import numpy as np
import pytest
import torch
import yaml

from greenpipe import calib
from greenpipe.errors import DataError
from greenpipe.params import parse_params
from greenpipe.recipes import get_recipe
from greenpipe.recipes.base import model_from_checkpoint
from tasks.calib_dump import calib_dump
from tests.workspace import make_checkpoint, make_prepared, tiny_params


@pytest.fixture
def params():
    with open("params.yaml") as f:
        return parse_params(tiny_params(yaml.safe_load(f)))


def test_dump_at_model_input(params, tmp_path):
    data = make_prepared(tmp_path / "prepared")
    make_checkpoint(tmp_path / "model")
    metrics = calib_dump(params, "denoise", data, tmp_path / "model", tmp_path / "calib")
    assert calib.boundaries(tmp_path / "calib") == ["input"]
    manifest = calib.read_manifest(tmp_path / "calib", "input")
    assert manifest["count"] == params.calib_dump.samples == metrics["samples"]
    assert manifest["shape"] == [1, 3, 32, 32] and manifest["dtype"] == "float32"
    arrays = list(calib.iter_boundary(tmp_path / "calib", "input"))
    assert len(arrays) == manifest["count"]
    stacked = np.stack(arrays)
    assert manifest["min"] == pytest.approx(float(stacked.min())) and manifest["max"] == pytest.approx(float(stacked.max()))
    assert all(src.startswith("img") for src in manifest["sources"])


def test_inner_boundary_captures_that_modules_input(params, tmp_path, monkeypatch):
    """A recipe that cuts its model inside (like TSM) gets that module's input dumped."""
    data = make_prepared(tmp_path / "prepared")
    make_checkpoint(tmp_path / "model")
    recipe = get_recipe("denoise")
    monkeypatch.setattr(recipe, "boundaries", lambda model: {"input": None, "head_in": model.head})
    calib_dump(params, "denoise", data, tmp_path / "model", tmp_path / "calib")
    assert calib.boundaries(tmp_path / "calib") == ["input", "head_in"]
    model, _ = model_from_checkpoint(tmp_path / "model" / "checkpoint.pt")
    seen = {}
    model.head.register_forward_pre_hook(lambda m, inp: seen.setdefault("x", inp[0]))
    first_input = next(calib.iter_boundary(tmp_path / "calib", "input"))
    with torch.no_grad():
        model(torch.from_numpy(first_input))
    first_head = next(calib.iter_boundary(tmp_path / "calib", "head_in"))
    np.testing.assert_allclose(first_head, seen["x"].numpy(), rtol=0, atol=1e-6)


def test_failed_dump_keeps_previous_output(params, tmp_path):
    data = make_prepared(tmp_path / "prepared")
    make_checkpoint(tmp_path / "model")
    calib_dump(params, "denoise", data, tmp_path / "model", tmp_path / "calib")
    (tmp_path / "model" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):
        calib_dump(params, "denoise", data, tmp_path / "model", tmp_path / "calib")
    assert calib.read_manifest(tmp_path / "calib", "input")["count"] == params.calib_dump.samples


def test_boundary_archive_round_trip_with_varying_shapes(tmp_path):
    """Each sample is one entry of the boundary's archive, read back bit-exact and in order."""
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(1, 3, s, s)).astype(np.float32) for s in (8, 16, 8)] + [np.arange(6, dtype=np.int8)]
    writer = calib.BoundaryWriter(tmp_path, "b")
    for k, a in enumerate(arrays):
        writer.add(a, f"s{k}")
    manifest = writer.close()
    assert manifest["shape"] == "varies" and manifest["entries"] == ["000000", "000001", "000002", "000003"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["arrays.npz", "manifest.json"]
    back = list(calib.iter_boundary(tmp_path, "b"))
    assert len(back) == 4 and all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, back))
    assert len(list(calib.iter_boundary(tmp_path, "b", limit=2))) == 2


def test_dump_without_archive_names_the_fix(tmp_path):
    writer = calib.BoundaryWriter(tmp_path, "b")
    writer.add(np.zeros((1, 3, 4, 4), np.float32), "s")
    writer.close()
    (tmp_path / "b" / "arrays.npz").unlink()
    with pytest.raises(DataError, match=r"arrays\.npz: missing.*dvc repro calib_dump"):
        next(calib.iter_boundary(tmp_path, "b"))


def _dump_with_non_finite(root):
    """A real dump at boundary ``input``: 4 samples, the third holding 2 NaN and 1 Inf."""
    rng = np.random.default_rng(0)
    writer = calib.BoundaryWriter(root, "input")
    for k in range(4):
        x = rng.random((1, 3, 32, 32)).astype(np.float32)
        if k == 2:
            x[0, 1, 3, :2] = np.nan
            x[0, 2, 5, 7] = -np.inf
        writer.add(x, f"img{k}@0,0+32")
    writer.close()
    calib.write_index(root, ["input"])
    return root


def test_non_finite_calibration_arrays_are_named_with_file_sample_and_count(tmp_path):
    root = _dump_with_non_finite(tmp_path / "calib")
    with pytest.raises(DataError) as exc:
        calib.check_finite(root, "input")
    message = str(exc.value)
    assert str(root / "input" / "arrays.npz") in message and "1 of 4 arrays at boundary 'input'" in message
    assert "000002.npy, sample img2@0,0+32: 2 NaN and 1 Inf of 3072 values" in message
    calib.check_finite(root, "input", limit=2)  # the first two samples are clean


def test_quantize_stage_refuses_a_dump_with_nan_before_the_quantizer_runs(tmp_path):
    from greenpipe.quant.stage import quantize_stage
    from tests.stage_fixtures import make_workspace

    ws = make_workspace(tmp_path / "ws")
    root = _dump_with_non_finite(tmp_path / "nan_calib")
    with pytest.raises(DataError, match=r"000002\.npy, sample img2@0,0\+32: 2 NaN and 1 Inf"):
        quantize_stage(ws.params, "ptq8", ws.model, root, ws.data, tmp_path / "quant")
    assert not (tmp_path / "quant").exists()
