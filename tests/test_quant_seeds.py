"""benchmarks/quant_seeds.py on a tiny workspace: real quantize-stage runs per seed, drops read back from them."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from benchmarks import quant_seeds
from greenpipe.io import read_json
from tests.stage_fixtures import ROOT, make_workspace
from tests.workspace import tiny_params


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    raw = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (ws.root / "params.yaml").write_text(yaml.safe_dump(raw))
    return ws


def _args(ws, out, *extra):
    return ["--params", str(ws.root / "params.yaml"), "--model", str(ws.model), "--calib", str(ws.calib),
            "--data", str(ws.data), "--out", str(out), *extra]


def test_every_seed_is_a_quantize_stage_run_and_the_median_is_over_them(ws, tmp_path, capsys):
    quant_seeds.main(_args(ws, tmp_path, "--variants", "qat8", "--seeds", "0", "1", "2", "--goal", "qat8=0.15",
                                 "--set", "quantize.variants.qat8.steps=6",
                                 "--set", "quantize.variants.qat8.lr=0.01"))  # 6 steps that move the tiny model
    reference = read_json(tmp_path / "fp32" / "metrics.json")["quality"]["value"]
    drops = []
    for seed in (0, 1, 2):
        run = tmp_path / f"qat8-seed{seed}"
        assert yaml.safe_load((run / "params.yaml").read_text())["base"]["seed"] == seed
        drops.append(reference - read_json(run / "metrics.json")["quality"]["value"])
    assert len(set(drops)) > 1  # the seed reaches the training variant: the runs differ
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("qat8 "))
    median = float(np.median(drops))
    assert f"{median:9.3f}" in row and f"{min(drops):.3f} .. {max(drops):.3f}" in row
    assert row.endswith("meets" if median <= 0.15 else "misses")


def test_bad_input_is_refused_before_any_run(ws, tmp_path):
    with pytest.raises(SystemExit, match="--goal 'qat8': expected variant=number"):
        quant_seeds.main(_args(ws, tmp_path, "--goal", "qat8"))
    with pytest.raises(SystemExit, match="variant\\(s\\) nope not in quantize.variants"):
        quant_seeds.main(_args(ws, tmp_path, "--variants", "nope"))
    with pytest.raises(SystemExit, match="checkpoint.pt missing; run `dvc repro calib_dump` first"):
        quant_seeds.main(_args(ws, tmp_path, "--model", str(tmp_path / "none")))
    assert not any(tmp_path.iterdir())
