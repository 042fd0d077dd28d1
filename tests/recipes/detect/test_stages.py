"""The detect recipe's stages and the shared prune stage on tiny real files: ingest, validate, train,
prune, calibration, quantize (fp32, ptq8), compile, eval.

Tiny data and networks: this checks the plumbing, the files each stage writes and the errors it
names, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from greenpipe.errors import DataError, GreenpipeError
from greenpipe.io import read_json
from greenpipe.prune.stage import prune_stage
from greenpipe.quant.stage import quantize_stage
from greenpipe.recipes import get_recipe
from greenpipe.recipes.base import model_from_checkpoint
from greenpipe.recipes.detect.data import load
from greenpipe.recipes.detect.ingest import tile_origins
from greenpipe.train import train
from tasks.calib_dump import calib_dump
from tasks.compile import compile_stage
from tasks.recipe_stage import recipe_stage
from tests.data.fixtures import make_params
from tests.workspace import TINY_PARAMS_OVERRIDES, make_checkpoint


def write_scenes(root: Path, count: int = 3, size: int = 96) -> Path:
    """VOC images (``size`` px, smooth background) with bright squares ("box") and discs' squares ("disc")."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        img = np.full((size, size, 3), 60, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
        objs = ""
        for j in range(6):
            s = int(rng.integers(10, 20))
            x, y = int(rng.integers(0, size - s)), int(rng.integers(0, size - s))
            name = ("box", "disc")[j % 2]
            img[y:y + s, x:x + s] = (230, 200, 40) if name == "box" else (40, 120, 230)
            objs += (f"<object><name>{name}</name><bndbox><xmin>{x}</xmin><ymin>{y}</ymin><xmax>{x + s}</xmax>"
                     f"<ymax>{y + s}</ymax></bndbox></object>")
        Image.fromarray(img).save(root / f"scene{k}.png")
        (root / f"scene{k}.xml").write_text(f"<annotation><filename>scene{k}.png</filename><size><width>{size}"
                                            f"</width><height>{size}</height></size>{objs}</annotation>")
    return root


def detect_params(root: Path, **over: dict):
    section = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY_PARAMS_OVERRIDES["detect"].items()}
    section["data"] = {**section["data"], "source": "voc", "root": str(root), "tile": 48}
    for key, value in over.items():
        section[key] = {**section.get(key, {}), **value} if isinstance(value, dict) else value
    return make_params(detect=section, prune=dict(TINY_PARAMS_OVERRIDES["prune"]))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("detectstages")
    params = detect_params(write_scenes(work / "voc"))
    recipe_stage(params, "detect", "ingest", {"out": work / "data"})
    return work


def test_tiles_do_not_overlap_and_a_narrow_last_one_is_kept_from_a_quarter_tile():
    assert tile_origins(400, 192) == [0, 192]  # the 16 px left over is under a quarter tile
    assert tile_origins(450, 192) == [0, 192, 384]  # 66 px >= 48
    assert tile_origins(100, 192) == [0]


def test_ingest_tiles_clips_boxes_and_splits_every_tile_once(work):
    manifest = read_json(work / "data" / "manifest.json")
    assert manifest["classes"] == ["box", "disc"] and manifest["input_size"] == 32
    tiles = {r["name"]: r["split"] for r in manifest["tiles"]}
    assert len(tiles) == 3 * 4  # 96 px images, 48 px tiles
    assert {"train", "val"} == set(tiles.values())
    for split in ("train", "val"):
        data = load(work / "data" / split, "voc", tuple(manifest["classes"]))  # validated: boxes inside tiles
        assert {s.id for s in data.samples} == {n for n, s in tiles.items() if s == split}
        assert all(s.width == 48 and s.height == 48 for s in data.samples)
    out = recipe_stage(detect_params(work / "voc"), "detect", "validate", {"data": work / "data"})
    assert out["success"] and out["train"]["tiles"] + out["val"]["tiles"] == 12


def test_missing_wheel_and_too_few_tiles_are_named_errors(work, tmp_path):
    builtin = detect_params(work / "voc", data={"source": "builtin"})
    with pytest.raises(DataError, match="nowhere.whl: the deepforest wheel.*pip download deepforest==2.1.0"):
        recipe_stage(builtin, "detect", "ingest", {"wheel": tmp_path / "nowhere.whl", "out": tmp_path / "d"})
    assert not (tmp_path / "d").exists()
    strict = detect_params(work / "voc", validate={"min_train": 100})
    with pytest.raises(DataError, match="detect.validate.min_train = 100"):
        recipe_stage(strict, "detect", "validate", {"data": work / "data"})


def test_prune_refuses_a_model_without_prunable_convolutions(work, tmp_path):
    make_checkpoint(tmp_path / "unet")  # the denoise UNet declares no prunable units
    with pytest.raises(GreenpipeError, match="declares no prunable convolutions"):
        prune_stage(detect_params(work / "voc"), tmp_path / "unet", work / "data", tmp_path / "out", tmp_path / "f")


@pytest.mark.slow
def test_vgg_ssd_trains_prunes_quantizes_compiles_and_is_measured(work):
    params, data = detect_params(work / "voc"), work / "data"
    model = work / "models" / "vgg"
    metrics = train(params, data, model, work / "curve.csv", None, "detect", "vgg")
    assert metrics["quality"]["primary"] == "map50" and 0 <= metrics["val_map50"] <= 1

    pruned = work / "models" / "vgg_pruned"
    p = prune_stage(params, model, data, pruned, work / "reports" / "prune", "vgg")
    for key in ("macs_before", "macs_after", "params_before", "params_after", "threshold", "kept_kernels"):
        assert key in p
    assert p["macs_after"] <= p["macs_before"] and p["params_after"] <= p["params_before"]
    assert (work / "reports" / "prune" / "utilisation.png").stat().st_size > 0
    util = read_json(work / "reports" / "prune" / "utilisation.json")
    assert {k: len(v) for k, v in util.items()} == p["kernels_before"]
    # the pruned checkpoint describes itself: the recipe rebuilds its narrowed shape
    rebuilt, ckpt = model_from_checkpoint(pruned / "checkpoint.pt")
    assert {k: len(v) for k, v in ckpt["model_args"]["kept"].items()} == p["kept_kernels"]
    convs = [u.block[0].out_channels for u in rebuilt.prunable()]
    assert convs == list(p["kept_kernels"].values())

    for name in ("vgg", "vgg_pruned"):
        calib_dump(params, "detect", data, work / "models" / name, work / "calib" / name)
        for variant in ("fp32", "ptq8"):
            quant = work / "quant" / name / variant
            q = quantize_stage(params, variant, work / "models" / name, work / "calib" / name, data, quant)
            assert q["quality"]["primary"] == "map50"
            c = compile_stage(params, variant, "cpu", quant, data, work / "compile" / name / variant / "cpu")
            assert c["agreement"]["max_abs_diff"] <= c["agreement"]["tolerance"]
        out = recipe_stage(params, "detect", "eval", {"model": work / "models" / name, "compiled": work / "compile" / name,
                                                      "data": data, "out": work / "metrics" / name})
        assert set(out["variants"]) == {"fp32", "ptq8"}
        row = read_json(work / "metrics" / name / "ptq8.json")
        assert (row["model"], row["variant"], row["batch"]) == (name, "ptq8", 1)
        assert 0 <= row["map50"] <= 1 and 0 <= row["map50_95"] <= row["map50"] + 1e-9
        assert row["fps"] > 0 and row["latency_ms_spread"][0] <= row["latency_ms"] <= row["latency_ms_spread"][1]
        assert row["macs"] > 0 and row["params"] > 0 and row["source"].startswith("measured on ")
    assert read_json(work / "metrics" / "vgg_pruned" / "fp32.json")["macs"] == p["macs_after"]


def test_a_pruned_checkpoint_rebuilds_to_the_same_outputs(tmp_path):
    recipe = get_recipe("detect")
    args = {"num_classes": 2, "backbone": "vgg", "width": 4, "input_size": 32}
    torch.manual_seed(0)
    model = recipe.build_model(args).eval()
    from greenpipe.prune.lkam import prune

    units = model.prunable()
    util = [np.where(np.arange(u.kernels) % 2 == 0, 0.8, 0.0).astype(np.float32) for u in units]
    kept = prune(model, units, util, 0.05)
    rebuilt = recipe.build_model({**args, "kept": kept}).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_samples_draw_a_confident_detection_as_an_outline(tmp_path):
    from greenpipe.io import read_image
    from greenpipe.recipes.detect.model import SSDConfig

    raw = np.zeros((len(SSDConfig(num_classes=2, input_size=64).priors()), 4 + 3), np.float32)
    raw[1:, 4] = 10.0  # background everywhere but the first prior, which is class 0
    raw[0, 4 + 1] = 10.0
    (path,) = get_recipe("detect").write_samples({"tile": raw}, tmp_path, 3)
    img = read_image(path)
    assert img.shape == (64, 64, 3) and img.max() > 0 and img[32, 32].max() == 0  # an outline, not a fill
