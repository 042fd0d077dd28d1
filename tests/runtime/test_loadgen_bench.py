"""The LoadGen wrapper on a tiny ORT model: validity, percentiles and logs come from LoadGen."""

from __future__ import annotations

import time

import mlcommons_loadgen  # noqa: F401  (its import aliases mlperf_loadgen away; the wrapper must cope)
import numpy as np
import pytest

from greenpipe.bench.loadgen import (
    EARLY_STOPPING_MIN_QUERIES,
    benchmark,
    make_samples,
    parse_detail_log,
    run_scenario,
    status,
    verdict,
)
from greenpipe.errors import GreenpipeError
from greenpipe.quant.export import export_onnx
from greenpipe.runtime import load
from tests.stage_fixtures import calib_batches, tiny_unet


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    path = export_onnx(tiny_unet(), calib_batches(1)[0], tmp_path_factory.mktemp("m"))
    return load("ort", path, threads=1, batch=1)


def test_benchmark_reports_loadgen_figures_and_keeps_logs(runner, tmp_path):
    result = benchmark(runner, (1, 3, 32, 32), single_stream_s=0.5, offline_s=0.5, log_dir=tmp_path, batch=2)
    # LoadGen judges both half-second runs VALID; the rules ask for 600 s, so they are reported non-compliant.
    assert result["loadgen_validity"] == {"SingleStream": "VALID", "Offline": "VALID"}
    assert result["validity"]["Offline"] == "non-compliant (duration 0.5 s < 600 s)"
    ss = result["duration_s"]["SingleStream"]  # at least 0.5 s, longer if 64 queries took longer
    assert ss >= 0.5 and result["validity"]["SingleStream"] == f"non-compliant (duration {ss:.3g} s < 600 s)"
    assert result["valid"] is False
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    assert result["fps"] > 0
    single, offline = result["single_stream"], result["offline"]
    assert single["settings"]["min_duration_ms"] == 500 and single["settings"]["min_query_count"] == 64
    assert offline["settings"]["min_query_count"] == 1
    assert offline["settings"]["batch"] == 2 and offline["settings"]["samples_per_query"] >= 1
    detail = parse_detail_log(tmp_path / "SingleStream" / "mlperf_log_detail.txt")
    assert detail["effective_scenario"] == "SingleStream"
    assert result["p90_ms"] == detail["result_90.00_percentile_latency_ns"] / 1e6  # read back, not re-timed
    assert single["query_count"] == detail["result_query_count"] > 0
    for scenario in ("SingleStream", "Offline"):
        assert (tmp_path / scenario / "mlperf_log_summary.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dirs were moved into place


def test_benchmark_without_offline_runs_single_stream_only(runner, tmp_path):
    result = benchmark(runner, (1, 3, 32, 32), single_stream_s=0.2, offline_s=None, log_dir=tmp_path)
    assert result["fps"] is None and result["offline"] is None and list(result["validity"]) == ["SingleStream"]
    assert result["loadgen_validity"] == {"SingleStream": "VALID"} and result["valid"] is False
    assert result["validity"]["SingleStream"].startswith("non-compliant (duration ") and result["p90_ms"] > 0
    assert not (tmp_path / "Offline").exists()


class _Slow:
    """A model too slow for 64 queries in the minimum duration."""

    def run(self, x):
        time.sleep(0.01)
        return x

    def describe(self):
        return {"label": "sleep 10 ms", "host": "test"}


def test_a_slow_model_runs_the_queries_early_stopping_needs_instead_of_ending_invalid(tmp_path):
    result = run_scenario(_Slow(), make_samples((1, 3, 8, 8), 4), "SingleStream", 0.1, tmp_path)
    assert result["query_count"] >= EARLY_STOPPING_MIN_QUERIES and result["loadgen_validity"] == "VALID"
    assert result["duration_s"] >= EARLY_STOPPING_MIN_QUERIES * 0.01  # the queries took longer than 0.1 s


class _Fast:
    """A model (0.2 ms per call) far faster than its warm-up suggested."""

    def run(self, x):
        time.sleep(0.0002)
        return x

    def describe(self):
        return {"label": "sleep 0.2 ms", "host": "test"}


def test_an_offline_query_sized_too_small_is_sized_again_from_the_measured_rate(tmp_path):
    # A 1 s warm-up estimate for a model that takes 0.2 ms: LoadGen's first query is one sample, done long
    # before min_duration, which LoadGen judges INVALID; the rerun sized from the measured rate is VALID.
    result = run_scenario(_Fast(), make_samples((1, 3, 8, 8), 4), "Offline", 0.1, tmp_path, expected_latency_s=1.0)
    assert result["loadgen_validity"] == "VALID" and result["invalid_reason"] is None
    assert result["settings"]["resized"] >= 1 and result["settings"]["samples_per_query"] > 1
    assert parse_detail_log(tmp_path / "Offline" / "mlperf_log_detail.txt")["result_validity"] == "VALID"


def test_a_single_stream_schedule_from_too_slow_a_warm_up_is_generated_again_from_the_measured_latency(tmp_path):
    # A 1 s warm-up estimate (a loaded host at warm-up) for a model that takes 0.2 ms: LoadGen generates the 64
    # minimum queries, done long before min_duration, which LoadGen judges INVALID ("Decrease the expected
    # latency"); the rerun generated from the measured latency is VALID and lasts min_duration.
    result = run_scenario(_Fast(), make_samples((1, 3, 8, 8), 4), "SingleStream", 0.2, tmp_path,
                          expected_latency_s=1.0)
    assert result["loadgen_validity"] == "VALID" and result["invalid_reason"] is None
    assert result["settings"]["resized"] >= 1 and result["query_count"] > EARLY_STOPPING_MIN_QUERIES
    assert parse_detail_log(tmp_path / "SingleStream" / "mlperf_log_detail.txt")["result_validity"] == "VALID"


def test_verdict_is_valid_only_for_a_loadgen_valid_run_to_the_rules_duration():
    assert verdict("VALID", 600.0) == "VALID"
    assert verdict("VALID", 3.0) == "non-compliant (duration 3 s < 600 s)"
    assert verdict("VALID", 599.4) == "non-compliant (duration 599 s < 600 s)"
    assert verdict("INVALID", 900.0) == "INVALID"  # LoadGen's INVALID is never upgraded
    assert verdict("VALID", None) == "non-compliant (duration unknown s < 600 s)"
    assert status({"SingleStream": "VALID", "Offline": "VALID"}) == "VALID"
    assert status({"SingleStream": "INVALID", "Offline": "VALID"}) == "SingleStream: INVALID; Offline: VALID"


class _Broken:
    def run(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("device lost")

    def describe(self) -> dict:
        return {}


def test_a_failing_runner_surfaces_as_a_user_error(tmp_path):
    samples = make_samples((1, 3, 8, 8), count=2)
    with pytest.raises(GreenpipeError, match="LoadGen SingleStream: the runner failed .*device lost"):
        run_scenario(_Broken(), samples, "SingleStream", 0.05, tmp_path, expected_latency_s=0.001)


def test_repeats_give_the_median_and_spread_of_their_runs(runner, tmp_path):
    result = benchmark(runner, (1, 3, 32, 32), single_stream_s=0.1, offline_s=0.1, log_dir=tmp_path, repeats=5)
    assert result["repeats"] == 5 and len(result["per_repeat"]) == 5
    for figure in ("p50_ms", "p90_ms", "fps"):
        values = sorted(r[figure] for r in result["per_repeat"])
        assert result[figure] == values[2] and result["spread"][figure] == [values[0], values[-1]]
    for i in range(5):  # every repeat's own LoadGen logs
        assert (tmp_path / f"repeat-{i}" / "SingleStream" / "mlperf_log_detail.txt").exists()
        assert (tmp_path / f"repeat-{i}" / "Offline" / "mlperf_log_summary.txt").exists()
    assert result["validity"]["Offline"] == "non-compliant (duration 0.1 s < 600 s)"
    with pytest.raises(ValueError, match="repeats=0"):
        benchmark(runner, (1, 3, 32, 32), 0.1, None, tmp_path, repeats=0)
