"""`dvc repro` of the whole DAG in a temp copy of the repository, tiny params.

Checks every stage's outputs, that a second repro runs nothing, and that a
change to one ptq8 parameter reruns exactly the ptq8 chain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from greenpipe.io import read_json
from greenpipe.recipes import RECIPES, get_recipe
from greenpipe.recipes.base import Quality, check_quality
from tests.workspace import tiny_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh checkout-like copy with tiny params and a small clean-only dataset."""
    work = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, work / name)
    for name in ("tasks", "greenpipe", "flows"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    with open(ROOT / "params.yaml") as f:
        params = tiny_params(yaml.safe_load(f))
    # The DAG's shape, not every variant's training: the baseline and the DPU-numerics PTQ.
    params["quantize"]["variants"] = {k: params["quantize"]["variants"][k] for k in ("fp32", "ptq8")}
    params["segment"]["quantize"] = params["segment"]["deploy"] = ["fp32", "ptq8"]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], work)
    _run([sys.executable, "-m", "dvc", "init", "-q"], work)
    _run([sys.executable, "-m", "greenpipe.cli", "data", "builtin", "data"], work)
    _run([sys.executable, "-m", "dvc", "add", "-q", "data"], work)
    # the detect recipe's built-in data: the deepforest wheel `make setup` downloads (pip download --no-deps)
    wheel = ROOT / ".whl" / "deepforest-2.1.0-py3-none-any.whl"
    if wheel.is_file():
        (work / ".whl").mkdir()
        shutil.copy(wheel, work / ".whl" / wheel.name)
    return work


def test_repro_runs_every_stage_and_writes_outputs(repo):
    _run([sys.executable, "-m", "dvc", "repro"], repo)
    for path in [
        "artifacts/prepared/manifest.json",
        "reports/validate",
        "models/denoise/checkpoint.pt",
        "artifacts/calib/input/manifest.json",
        "artifacts/quant/ptq8/quant_report.json",
        "artifacts/compile/ptq8/cpu/model.onnx",
        "artifacts/compile/fp32/cpu/model.onnx",
        "metrics/deploy/ptq8-local.json",
        "metrics/deploy/fp32-local.json",
        "metrics/soak/ptq8-local.json",
        "metrics/baseline.json",
        "reports/summary/summary.md",
        "reports/summary/pareto.png",
    ]:
        assert (repo / path).exists(), path
    summary = (repo / "reports/summary/summary.md").read_text()
    assert "| ptq8 | local |" in summary and "| fp32 | local |" in summary


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_registered_recipe_goes_through_the_dag_to_a_quality_record(repo, name):
    """Train -> calibration -> every variant -> deploy (eval + LoadGen) -> soak -> report, for each recipe.

    A recipe registered without its stages in dvc.yaml fails here (docs/architecture.md: How to add a recipe).
    """
    recipe = get_recipe(name)
    runs = [read_json(p) for p in sorted((repo / "metrics").glob("**/deploy/*.json"))]
    mine = [d for d in runs if d.get("recipe") == name]
    assert mine, f"recipe {name}: no deploy stage wrote metrics; add its stages to dvc.yaml"
    for d in mine:
        quality = Quality.from_dict(d["quality"])
        assert quality.primary == recipe.metrics[0].name and quality.samples > 0
        check_quality(quality, recipe, f"{name} {d['variant']}")  # finite, inside the metric's range
        assert d["fps"] > 0 and d["source"].startswith("measured on ")
    assert len({d["variant"] for d in mine}) >= 2, "a float and at least one quantized variant"
    soaks = [read_json(p) for p in sorted((repo / "metrics").glob("**/soak/*.json"))]
    assert any(d.get("recipe") == name and d["windows_done"] > 0 for d in soaks)
    summary = (repo / "reports/summary/summary.md").read_text()
    assert all(f"| {d['variant']} | local |" in summary for d in mine)


def test_second_repro_runs_nothing(repo):
    out = _run([sys.executable, "-m", "dvc", "repro"], repo).stdout
    assert "Running stage" not in out


def test_ptq8_param_change_reruns_only_its_chain(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # Other activation ranges and no bias correction change the int8 model, so everything downstream
    # of its compiled artifact must rerun (a change leaving the artifact identical would stop at compile).
    # The segment recipe has its own table (segment.variants): the same change there reruns its ptq8 chain.
    for table in (params["quantize"]["variants"], params["segment"]["variants"]):
        table["ptq8"].update(act_calibration="minmax", bias_correction=False)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run([sys.executable, "-m", "dvc", "repro"], repo).stdout
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    segment = [f"segment_{stage}@{net}-ptq8{suffix}" for net in ("unet", "hrnet")
               for stage, suffix in (("quantize", ""), ("compile", "-cpu"), ("deploy", "-local"), ("soak", "-local"))]
    chains = params["detect"]["chains"]
    detect = [f"detect_{stage}@{chain}-ptq8{suffix}" for chain in chains
              for stage, suffix in (("quantize", ""), ("compile", "-cpu"), ("deploy", "-local"), ("soak", "-local"))]
    assert ran == sorted(["compile@ptq8-cpu", "deploy@ptq8-local", "quantize@ptq8", "report", "soak@ptq8-local",
                          *segment, "segment_eval@unet", "segment_eval@hrnet",
                          *detect, *[f"detect_eval@{chain}" for chain in chains]])


def test_prefect_flow_runs_every_stage_through_dvc(repo):
    """The flow makes one Prefect task per DVC stage; DVC's lock says nothing needs to run."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline
    from greenpipe.pipeline import stages

    with prefect_test_harness(server_startup_timeout=120):
        results = pipeline(root=str(repo))
    assert [r["stage"] for r in results] == [s.name for s in stages(repo)]
    assert not any(r["executed"] for r in results)
