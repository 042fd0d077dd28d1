"""The `greenpipe` command: denoise a folder with a compiled artifact, check params."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from greenpipe.cli import app
from greenpipe.io import read_image, write_image
from greenpipe.recipes.denoise import denoise_tiled
from greenpipe.quant.stage import quantize_stage
from tasks.compile import compile_stage
from tests.stage_fixtures import make_workspace

runner = CliRunner()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    quantize_stage(ws.params, "ptq8", ws.model, ws.calib, ws.data, ws.root / "quant")
    compile_stage(ws.params, "ptq8", "cpu", ws.root / "quant", ws.data, ws.root / "compiled")
    return ws.root / "compiled" / "model.onnx"


def test_denoise_writes_every_image_at_its_size_and_names_bad_files(compiled, tmp_path):
    src = tmp_path / "in"
    rng = np.random.default_rng(0)
    write_image(src / "odd.png", rng.random((37, 53, 3)).astype(np.float32))
    write_image(src / "big.png", rng.random((90, 70, 3)).astype(np.float32))
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    result = runner.invoke(app, ["denoise", str(src), str(tmp_path / "out"), "--model", str(compiled), "--tile", "64"])
    assert result.exit_code == 2
    assert "broken.png" in result.output and "cannot decode" in result.output
    assert read_image(tmp_path / "out" / "odd.png").shape == (37, 53, 3)
    assert read_image(tmp_path / "out" / "big.png").shape == (90, 70, 3)


def test_denoise_self_ensemble_averages_eight_passes_of_the_artifact(compiled, tmp_path):
    src = tmp_path / "in"
    write_image(src / "odd.png", np.random.default_rng(2).random((37, 53, 3)).astype(np.float32))
    outs = {}
    for passes in ("1", "8"):
        result = runner.invoke(app, ["denoise", str(src), str(tmp_path / passes), "--model", str(compiled),
                                     "--self-ensemble", passes])
        assert result.exit_code == 0, result.output
        outs[passes] = read_image(tmp_path / passes / "odd.png")
    assert outs["8"].shape == (37, 53, 3) and not np.array_equal(outs["8"], outs["1"])

    result = runner.invoke(app, ["denoise", str(src), str(tmp_path / "bad"), "--model", str(compiled),
                                 "--self-ensemble", "3"])
    assert result.exit_code == 2 and "self-ensemble passes = 3: must be one of 1, 2, 4, 8" in result.output
    assert not (tmp_path / "bad").exists()


def test_denoise_without_model_says_what_to_run(tmp_path):
    (tmp_path / "in").mkdir()
    result = runner.invoke(app, ["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(tmp_path / "no.onnx")])
    assert result.exit_code == 2 and "dvc repro compile@ptq8-cpu" in result.output


def test_tiling_matches_whole_image_for_a_local_operator():
    """Tiles carry enough context that a 3x3 operator gives the same result as one pass."""
    from scipy.ndimage import uniform_filter

    img = np.random.default_rng(1).random((150, 170, 3)).astype(np.float32)

    def blur(x):  # (1, 3, H, W) -> same; receptive field 3 px
        return uniform_filter(x, size=(1, 1, 3, 3), mode="reflect")

    whole = denoise_tiled(blur, img, tile=0, multiple=1)
    tiled = denoise_tiled(blur, img, tile=64, context=8, multiple=1)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_check_validates_params_and_lists_stages():
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "quantize@ptq8" in result.output
