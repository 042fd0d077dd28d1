"""Every registered recipe keeps the protocol, and the shared core serves a recipe it has never seen.

The first test is parametrized over ``RECIPES``: a new recipe is picked up with no edit here. The
toy recipe below (a lower-is-better error metric, no torch) goes through the shared deploy
measurement, the report and the nightly gate, which name none of its metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from greenpipe import calib
from greenpipe.calib import CalibrationSamples
from greenpipe.deploy import DeployJob, measure
from greenpipe.errors import GreenpipeError
from greenpipe.io import read_json, write_json
from greenpipe.nightly.gate import compare
from greenpipe.nightly.results import collect_rows
from greenpipe.params import load_params
from greenpipe.recipes import RECIPES, get_recipe
from greenpipe.recipes.base import Evaluation, Metric, Quality, Reference, check_quality
from greenpipe.registry import Registry
from greenpipe.report.summary import Section, collect, markdown
from tasks.calib_dump import calib_dump

PROTOCOL = ("build_model", "boundaries", "calibration_samples", "multiple", "evaluate", "write_samples",
            "references", "bench_input", "eval_options", "eval_files", "pipeline")


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_registered_recipe_keeps_the_protocol(name, tmp_path):
    recipe = get_recipe(name)
    assert recipe.name == name and isinstance(recipe.self_ensemble, bool)
    assert recipe.validate_params is None or issubclass(recipe.validate_params, BaseModel)
    missing = [m for m in PROTOCOL if not callable(getattr(recipe, m, None))]
    assert not missing, f"recipe {name} lacks {missing}"
    metrics = recipe.metrics
    assert metrics and metrics[0].column, "the primary metric comes first and is shown"
    assert len({m.name for m in metrics}) == len(metrics)
    assert all(m.lo < m.hi for m in metrics)
    assert recipe.references(tmp_path) == []  # no stage has run: nothing to compare with, and no error
    mid = {m.name: (m.lo + m.hi) / 2 if math.isfinite(m.lo + m.hi) else 1.0 for m in metrics}
    quality = Quality.of(metrics, mid, samples=3)
    assert Quality.from_dict(quality.to_dict()) == quality
    check_quality(quality, recipe, "test")
    broken = Quality.of(metrics, {**mid, metrics[0].name: metrics[0].hi + 1 if math.isfinite(metrics[0].hi)
                                  else math.nan}, samples=3)
    with pytest.raises(GreenpipeError, match=metrics[0].name):
        check_quality(broken, recipe, "test")


# -- a recipe the core has never seen -----------------------------------------------------------------

class ToyRecipe:
    """Scores a runner by its mean absolute error against stored targets (lower is better)."""

    name = "toy"
    metrics = (Metric("mae", "MAE", "", higher_is_better=False, lo=0.0, hi=10.0, fmt=".4f"),)
    self_ensemble = False
    validate_params = None  # no data checks

    def bench_input(self, model_args, input_size):
        return (1, 3, 8, 8)

    def eval_options(self, params, model_args):
        return {}

    def eval_files(self, data_root):
        return [Path(data_root) / "val.npz"]

    def pipeline(self, manifest, threads, batch, load):
        raise NotImplementedError

    def build_model(self, model_args):  # the shared deploy path never builds a model
        raise NotImplementedError

    def boundaries(self, model):
        return {"input": None}

    def calibration_samples(self, model_dir, data_root, params, rng):
        x = np.load(Path(data_root) / "val.npz")["x"]  # the toy has no train split
        picks = rng.permutation(len(x))[:2]
        return CalibrationSamples(["input"], ((f"s{i}", {"input": x[i : i + 1]}) for i in picks),
                                  facts={"samples": len(picks)})

    def multiple(self, model_args):
        return 1

    def evaluate(self, run: Callable[[np.ndarray], np.ndarray], data_root: Path, max_side: int = 0,
                 multiple: int = 1, outputs: dict | None = None) -> Evaluation:
        data = np.load(data_root / "val.npz")
        rows = []
        for i, (x, y) in enumerate(zip(data["x"], data["y"])):
            out = run(x[None])[0]
            if outputs is not None:
                outputs[f"s{i}"] = out
            rows.append({"name": f"s{i}", "mae": float(np.abs(out - y).mean())})
        mae = float(np.mean([r["mae"] for r in rows]))
        return Evaluation(Quality.of(self.metrics, {"mae": mae}, len(rows)), rows)

    def write_samples(self, outputs: Mapping[str, np.ndarray], out_dir: Path, count: int) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / f"{name}.npy" for name in sorted(outputs)[:count]]
        for path in paths:
            np.save(path, outputs[path.stem])
        return paths

    def references(self, metrics: Path) -> list[Reference]:
        return [Reference("predict zero", {"mae": 0.5}, "toy data: mean |target|")]


class ScaleRunner:
    """A 'compiled artifact' that multiplies its input: 1.0 is exact, anything else is off."""

    def __init__(self, scale: float):
        self.scale = scale

    def run(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale).astype(np.float32)

    def describe(self) -> dict:
        return {"runtime": "numpy", "label": f"numpy x{self.scale}", "host": "this test's CPU"}


@pytest.fixture
def toy(monkeypatch, tmp_path):
    registry = Registry("recipe")
    for name in RECIPES.names():
        registry.register(name)(get_recipe(name))
    registry.register("toy")(ToyRecipe())
    monkeypatch.setattr("greenpipe.recipes.base.RECIPES", registry)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 3, 8, 8)).astype(np.float32)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "val.npz", x=x, y=x)
    return registry.get("toy"), tmp_path


def _job(variant: str) -> DeployJob:
    return DeployJob(variant=variant, device="local", kind="cpu", target="cpu", runtime="numpy", batch=1,
                     threads=1, recipe="toy", multiple=1, input_shape=[1, 3, 8, 8], eval_options={}, eval_max_side=0,
                     single_stream_s=0.2, offline_s=0.2, artifact=f"{variant}.bin", artifact_bytes=100)


def test_a_new_recipe_goes_through_deploy_report_and_gate_with_no_core_edit(toy):
    recipe, root = toy
    metrics = root / "metrics"
    for variant, scale in (("fp32", 1.0), ("int8", 0.9)):
        m = measure(_job(variant), ScaleRunner(scale), root / "data", root / "deploy" / variant)
        assert m["quality"]["primary"] == "mae" and m["quality"]["higher_is_better"] is False
        assert m["samples"] == 4 and "psnr" not in m
        write_json(metrics / "deploy" / f"{variant}-local.json", m)
    write_json(metrics / "quantize" / "fp32.json", {"bits": {"weights": 32, "activations": 32}})
    assert sorted(p.name for p in (root / "deploy" / "int8" / "samples").iterdir())[:1] == ["s0.npy"]
    assert read_json(root / "deploy" / "int8" / "eval.json")["summary"]["mae"] > 0

    rows = {r.variant: r for r in collect(metrics, recipe)}
    assert rows["fp32"].reference and not rows["int8"].reference
    assert rows["fp32"].quality == 0.0 and rows["int8"].drop == pytest.approx(rows["int8"].quality)
    assert rows["int8"].drop > 0  # a higher error is worse: the drop is positive
    text = markdown([Section(recipe, list(rows.values()), recipe.references(metrics))])
    assert "| variant | device | MAE | drop vs float |" in text and "| predict zero | 0.5000 |" in text

    nightly = collect_rows(metrics)
    assert nightly["int8-local"]["quality_metric"] == "mae" and nightly["int8-local"]["quality_higher"] is False
    worse = {k: {**v, "quality": v["quality"] + 0.2} for k, v in nightly.items()}
    (reg, *_) = compare(worse, nightly, load_params().nightly.gate)
    assert reg.metric == "mae" and reg.worse_by == pytest.approx(0.2)


def test_an_implausible_score_is_refused_before_it_is_written(toy):
    recipe, root = toy
    with pytest.raises(GreenpipeError, match=r"mae = .* outside its plausible range"):
        measure(_job("broken"), ScaleRunner(1e6), root / "data", root / "deploy" / "broken")
    assert not (root / "deploy" / "broken" / "eval.json").exists()


def test_a_new_recipe_dumps_its_calibration_through_the_shared_stage(toy):
    recipe, root = toy
    m = calib_dump(load_params(), "toy", root / "data", root / "model", root / "calib")
    assert m["boundaries"] == 1 and m["samples"] == 2 and m["per_boundary"]["input"]["shape"] == [1, 3, 8, 8]
    assert calib.boundaries(root / "calib") == ["input"]
    assert calib.read_manifest(root / "calib", "input")["sources"][0].startswith("s")
    assert len(list(calib.iter_boundary(root / "calib", "input"))) == 2
