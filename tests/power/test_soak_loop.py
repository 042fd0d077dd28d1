"""The soak loop (greenpipe.power.soak) on a real numpy workload and real meters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from greenpipe.power import open_meter
from greenpipe.power.soak import (
    Checkpoint,
    SoakPlan,
    hist_percentile,
    latency_bin,
    merge_hist,
    run_soak,
    sampler_overhead,
    soak_key,
    summarize,
)

PLAN = SoakPlan(idle_s=0.2, warmup_s=0.3, duration_s=0.9, window_s=0.3, sample_hz=50)


def _matmul_workload(n: int = 128):
    def load():
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)

        def run_once() -> int:
            a @ a
            return 1

        return run_once

    return load


def test_histogram_percentiles_are_within_a_bin():
    values = np.linspace(1.0, 100.0, 1000)  # ms
    hist = {}
    for v in values:
        hist[latency_bin(v)] = hist.get(latency_bin(v), 0) + 1
    for q in (50, 90, 99):
        assert hist_percentile(hist, q) == pytest.approx(np.percentile(values, q), rel=0.025)
    half = {str(k): v for k, v in hist.items()}  # as read back from JSON
    assert merge_hist([half, half]) == {k: 2 * v for k, v in hist.items()}
    assert hist_percentile({}, 50) is None


def test_plan_windows_cover_the_duration():
    assert SoakPlan(0, 0, 600, 10, 1).n_windows == 60
    assert SoakPlan(0, 0, 12, 5, 1).n_windows == 3  # 15 s measured: never less than asked
    with pytest.raises(Exception, match="duration_s >= window_s"):
        SoakPlan(0, 0, 1, 2, 1)


def test_run_soak_checkpoints_every_window_and_summarizes(tmp_path):
    ckpt = Checkpoint(tmp_path / "ts.jsonl")
    seen = []
    with open_meter("estimate", tdp_w=50.0, idle_w=5.0) as meter:
        result = run_soak(_matmul_workload(), meter, PLAN, ckpt, {"key": "k1"}, publish=seen.append)
    records = ckpt.read()
    assert [r["kind"] for r in records][:2] == ["header", "idle"]
    assert records == seen  # everything checkpointed was published, in order
    measured = [r for r in records if r["kind"] == "window" and r["phase"] == "measure"]
    assert [w["index"] for w in measured] == [0, 1, 2]
    assert result["partial"] is False and result["windows_done"] == 3
    # power within the model's range; dynamic = avg - idle; energy = avg x s
    assert 5.0 <= result["avg_w"] <= 50.0 and 5.0 <= result["idle_w"] <= 50.0
    assert result["energy_j"] == pytest.approx(result["avg_w"] * result["measured_s"])
    assert result["fps"] == pytest.approx(result["inferences"] / result["measured_s"])
    assert result["power_samples"] >= 3 * 5  # 50 Hz over 0.9 s, allowing for a slow machine


def test_summarize_a_torn_partial_checkpoint(tmp_path):
    ckpt = Checkpoint(tmp_path / "ts.jsonl")
    with open_meter("estimate") as meter:
        run_soak(_matmul_workload(), meter, PLAN, ckpt, {"key": "k1"})
    lines = ckpt.path.read_text().splitlines()
    keep = [line for line in lines if '"index":2' not in line or '"phase":"warmup"' in line]
    ckpt.path.write_text("\n".join(keep) + "\n" + '{"kind":"window","phase":"meas')  # killed mid-write
    partial = summarize(ckpt.read(), PLAN)
    assert partial["partial"] is True and partial["windows_done"] == 2 and partial["windows_planned"] == 3
    # resuming it runs only the missing window and notes the gap
    with open_meter("estimate") as meter:
        result = run_soak(_matmul_workload(), meter, PLAN, ckpt, {"key": "k1"})
    assert result["resumed"] is True and result["resumes"][0]["after_window"] == 2 and not result["partial"]
    assert [t["index"] for t in result["timeline"] if t["phase"] == "measure"] == [0, 1, 2]
    # another soak's checkpoint is not resumed
    with open_meter("estimate") as meter:
        other = run_soak(_matmul_workload(), meter, PLAN, ckpt, {"key": "k2"})
    assert other["resumed"] is False and "discarded" in other["discarded_checkpoint"]
    assert json.loads(ckpt.path.read_text().splitlines()[0])["key"] == "k2"


def test_soak_key_changes_with_identity():
    assert soak_key({"a": 1, "b": [1, 2]}) == soak_key({"b": [1, 2], "a": 1})
    assert soak_key({"a": 1}) != soak_key({"a": 2})


def test_sampler_overhead_returns_a_figure():
    with open_meter("estimate") as meter:
        result = sampler_overhead(_matmul_workload()(), meter, hz=10, pairs=2, block_s=0.2)
    assert result["fps_without_sampler"] > 0 and result["fps_with_sampler"] > 0
    assert -1 < result["change"] < 1 and isinstance(result["goal_met"], bool)
    lo, hi = result["change_iqr"]
    assert lo <= result["change"] <= hi


@pytest.mark.gpu
def test_nvml_soak_of_a_cuda_workload(tmp_path):
    """A real NVML soak: board power of GPU 0 while it runs matmuls, against its idle draw."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA (this torch is a CPU build)")

    def load():
        a = torch.randn(4096, 4096, device="cuda")

        def run_once() -> int:
            a @ a
            torch.cuda.synchronize()
            return 1

        return run_once

    plan = SoakPlan(idle_s=2, warmup_s=3, duration_s=6, window_s=2, sample_hz=10)
    with open_meter("nvml", index=0) as meter:
        result = run_soak(load, meter, plan, Checkpoint(tmp_path / "ts.jsonl"), {"key": "gpu"})
        info = meter.describe()
    assert info.measured and info.scope == "card"
    assert result["windows_done"] == 3 and result["avg_w"] > 0 and result["power_samples"] > 0
    assert result["avg_w"] > result["idle_w"]  # a busy GPU draws more than an idle one
    assert result["mj_per_inference"] > 0
