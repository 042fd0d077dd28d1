"""MLPerf LoadGen around a greenpipe Runner: SingleStream latency and Offline throughput.

    from greenpipe.bench.loadgen import benchmark
    result = benchmark(runner, (1, 3, 256, 256), single_stream_s=4, offline_s=4, log_dir=out / "loadgen")

LoadGen issues the queries, times them and judges the run; this module only
supplies a query sample library (a few pre-generated input tensors, seeded)
and a system under test that calls ``runner.run`` on a worker thread.  Every
figure returned is read back from LoadGen's own logs
(``mlperf_log_detail.txt``, cross-checked with ``mlperf_log_summary.txt``),
never re-timed here.  A run lasts ``min_duration``, and SingleStream at least
64 queries (the fewest LoadGen's early-stopping p90 estimate needs: a slow
model, such as an 8-pass self-ensemble, runs longer than ``min_duration``
rather than end INVALID); Offline issues one query sized to the duration.
The validity is returned as LoadGen states it.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.io import replacing_dir
from greenpipe.runtime.base import Runner

SCENARIOS = ("SingleStream", "Offline")
QSL_SIZE = 8  # distinct input tensors LoadGen draws from
OFFLINE_QPS_MARGIN = 1.25  # LoadGen sizes the Offline query as expected_qps * duration: overshoot a little
# SingleStream runs at least this many queries, the fewest for which LoadGen's early-stopping estimate of
# the p90 latency exists: below it LoadGen judges the run INVALID whatever the duration.
EARLY_STOPPING_MIN_QUERIES = 64


def _loadgen():
    """The LoadGen extension module (``mlperf_loadgen``).

    The ``mlcommons_loadgen`` wheel's ``__init__`` replaces
    ``sys.modules["mlperf_loadgen"]`` by itself (an empty package), so after
    anyone imported it ``import mlperf_loadgen`` yields nothing; drop that alias
    and import the compiled module the wheel ships.
    """
    mod = sys.modules.get("mlperf_loadgen")
    if mod is not None and not hasattr(mod, "StartTestWithLogSettings"):
        del sys.modules["mlperf_loadgen"]
        mod = None
    if mod is None:
        try:
            import mlperf_loadgen as mod
        except ImportError:
            raise ToolchainMissing(
                "MLPerf LoadGen is not installed: `pip install mlcommons-loadgen` "
                '(check with: python -c "import mlperf_loadgen")'
            ) from None
    return mod


def make_samples(shape: Sequence[int], count: int = QSL_SIZE, seed: int = 0) -> list[np.ndarray]:
    """``count`` seeded float32 inputs of ``shape`` (values in [0, 1], like images)."""
    rng = np.random.default_rng(seed)
    return [rng.random(tuple(shape), dtype=np.float32) for _ in range(count)]


def estimate_latency_s(runner: Runner, x: np.ndarray, runs: int = 3) -> float:
    """Median wall time of ``runs`` calls after one warm-up: only to size LoadGen's queries."""
    runner.run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner.run(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


class _SUT:
    """Runs queries on one worker thread; completes each sample after ``runner.run``."""

    def __init__(self, lg, runner: Runner, samples: list[np.ndarray], batch: int):
        self.lg, self.runner, self.samples, self.batch = lg, runner, samples, batch
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="loadgen-sut", daemon=True)
        self.thread.start()

    def issue(self, query_samples) -> None:
        self.queue.put(list(query_samples))

    def flush(self) -> None:
        pass

    def _work(self) -> None:
        while (query := self.queue.get()) is not None:
            for start in range(0, len(query), self.batch):
                chunk = query[start : start + self.batch]
                if self.error is None:
                    try:
                        self.runner.run(np.concatenate([self.samples[s.index] for s in chunk]))
                    except BaseException as exc:  # re-raised after the test; LoadGen must still finish
                        self.error = exc
                self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, 0, 0) for s in chunk])

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


def parse_detail_log(path: Path) -> dict[str, Any]:
    """``key -> value`` of every ``:::MLLOG {json}`` line of a LoadGen detail log."""
    entries: dict[str, Any] = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith(":::MLLOG "):
            record = json.loads(line[len(":::MLLOG ") :])
            entries[record["key"]] = record["value"]
    return entries


def parse_summary_validity(path: Path) -> str | None:
    """``VALID`` / ``INVALID`` from a LoadGen summary log's ``Result is :`` line."""
    for line in Path(path).read_text().splitlines():
        if line.strip().startswith("Result is"):
            return line.split(":", 1)[1].strip()
    return None


def _ms(entries: dict, key: str) -> float | None:
    value = entries.get(key)
    return None if value is None else float(value) / 1e6


def run_scenario(
    runner: Runner,
    samples: list[np.ndarray],
    scenario: str,
    duration_s: float,
    log_dir: Path,
    batch: int = 1,
    expected_latency_s: float | None = None,
) -> dict[str, Any]:
    """One LoadGen performance run; logs end up in ``log_dir/<scenario>/``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r}: expected one of {SCENARIOS}")
    lg = _loadgen()
    if expected_latency_s is None:
        expected_latency_s = estimate_latency_s(runner, np.concatenate(samples[:batch]))
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = max(int(duration_s * 1000), 1)
    settings.min_query_count = EARLY_STOPPING_MIN_QUERIES if scenario == "SingleStream" else 1
    settings.performance_sample_count_override = len(samples)
    if scenario == "SingleStream":
        settings.single_stream_expected_latency_ns = max(int(expected_latency_s * 1e9), 1)
    else:
        settings.offline_expected_qps = max(batch / expected_latency_s * OFFLINE_QPS_MARGIN, 1.0)

    final = Path(log_dir) / scenario
    # A runner error still completes the run: its logs are swapped in, then the error is raised.
    with replacing_dir(final) as tmp:
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(tmp)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.enable_trace = False

        sut_impl = _SUT(lg, runner, samples, batch)
        sut = lg.ConstructSUT(sut_impl.issue, sut_impl.flush)
        qsl = lg.ConstructQSL(len(samples), len(samples), lambda idx: None, lambda idx: None)
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
            sut_impl.close()
    if sut_impl.error is not None:
        raise GreenpipeError(
            f"LoadGen {scenario}: the runner failed on a {samples[0].shape} input: {sut_impl.error}"
        ) from sut_impl.error

    detail = final / "mlperf_log_detail.txt"
    summary = final / "mlperf_log_summary.txt"
    entries = parse_detail_log(detail)
    validity = entries.get("result_validity")
    summary_validity = parse_summary_validity(summary)
    if validity is None or validity != summary_validity:
        raise GreenpipeError(
            f"{final}: LoadGen logs disagree or are incomplete "
            f"(detail: {validity!r}, summary: {summary_validity!r})"
        )
    result: dict[str, Any] = {
        "scenario": scenario,
        "validity": validity,
        "valid": validity == "VALID",
        "invalid_reason": entries.get("result_invalid_reason", "").strip() or None,
        "query_count": entries.get("result_query_count"),
        "mean_ms": _ms(entries, "result_mean_latency_ns"),
        "p50_ms": _ms(entries, "result_50.00_percentile_latency_ns"),
        "p90_ms": _ms(entries, "result_90.00_percentile_latency_ns"),
        "p99_ms": _ms(entries, "result_99.00_percentile_latency_ns"),
        "settings": {
            "min_duration_ms": entries.get("effective_min_duration_ms"),
            "min_query_count": entries.get("effective_min_query_count"),
            "performance_sample_count": entries.get("effective_performance_sample_count"),
            "samples_per_query": entries.get("effective_samples_per_query"),
            "target_qps": entries.get("effective_target_qps"),
            "batch": batch,
            "sample_shape": list(samples[0].shape),
            "expected_latency_ms_from_warmup": expected_latency_s * 1e3,
        },
        "loadgen_version": entries.get("loadgen_version"),
        "logs": {"summary": str(summary), "detail": str(detail)},
    }
    if scenario == "SingleStream":
        result["qps"] = entries.get("result_qps_without_loadgen_overhead")
        early = entries.get("early_stopping_latency_ss")
        result["early_stopping_p90_ms"] = None if early is None else float(early) / 1e6
    else:
        result["samples_per_second"] = entries.get("result_samples_per_second")
    return result


def benchmark(
    runner: Runner,
    input_shape: Sequence[int],
    single_stream_s: float,
    offline_s: float | None,
    log_dir: str | Path,
    batch: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """SingleStream (one ``input_shape`` sample per query) then Offline (batches of ``batch``).

    Returns the headline figures (``p50_ms``, ``p90_ms``, ``p99_ms`` from
    SingleStream; ``fps`` = Offline samples/s; ``valid`` = every run VALID)
    plus each scenario's full result (settings used, validity, log paths).
    ``offline_s=None`` runs SingleStream only (``fps`` and ``offline`` are None).
    """
    log_dir = Path(log_dir)
    samples = make_samples(input_shape, QSL_SIZE, seed)
    single_latency = estimate_latency_s(runner, samples[0])
    single = run_scenario(runner, samples, "SingleStream", single_stream_s, log_dir, 1, single_latency)
    offline = None
    if offline_s is not None:
        batched = np.concatenate([samples[k % len(samples)] for k in range(batch)])
        batch_latency = single_latency if batch == 1 else estimate_latency_s(runner, batched)
        offline = run_scenario(runner, samples, "Offline", offline_s, log_dir, batch, batch_latency)
    runs = {"SingleStream": single, **({"Offline": offline} if offline else {})}
    return {
        "p50_ms": single["p50_ms"],
        "p90_ms": single["p90_ms"],
        "p99_ms": single["p99_ms"],
        "fps": offline["samples_per_second"] if offline else None,
        "valid": all(run["valid"] for run in runs.values()),
        "validity": {name: run["validity"] for name, run in runs.items()},
        "input_shape": list(input_shape),
        "single_stream": single,
        "offline": offline,
    }
