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
LoadGen generates the queries up front from the warm-up's latency; a run that
runs out of them before ``min_duration`` (LoadGen's INVALID) is generated again
from the latency or rate LoadGen measured (``settings.resized``).

LoadGen's own verdict is kept as ``loadgen_validity``; what a run is reported
as (``validity``, :func:`verdict`) is stricter: the MLPerf Inference rules ask
for performance runs of at least 600 s, so a shorter run that LoadGen judged
VALID is reported ``non-compliant (duration N s < 600 s)``, and only a run to
the rule is ``VALID``.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.io import replacing_dir
from greenpipe.runtime.base import Runner

SCENARIOS = ("SingleStream", "Offline")
QSL_SIZE = 8  # distinct input tensors LoadGen draws from
OFFLINE_QPS_MARGIN = 1.25  # LoadGen sizes the Offline query as expected_qps * duration: overshoot a little
# LoadGen pre-generates SingleStream queries for duration / expected latency: undershoot the measured latency a little
SINGLE_STREAM_LATENCY_MARGIN = 0.8
# Times a run that ended before min_duration (too few queries generated) is sized again from the measured rate.
# A tiny first Offline query measures mostly LoadGen's per-query overhead, so the rate it gives is low: each
# resize at least doubles the Offline query, and at least halves SingleStream's expected latency.
RESIZES = 6
# SingleStream runs at least this many queries, the fewest for which LoadGen's early-stopping estimate of
# the p90 latency exists: below it LoadGen judges the run INVALID whatever the duration.
EARLY_STOPPING_MIN_QUERIES = 64
# The MLPerf Inference rules' minimum duration of a performance run (min_duration = 600000 ms).
RULES_MIN_DURATION_S = 600.0


def verdict(loadgen_validity: str | None, duration_s: float | None) -> str:
    """What a run is reported as: LoadGen's INVALID stays INVALID; a VALID run shorter than the rules'
    minimum is ``non-compliant (duration N s < 600 s)``; ``VALID`` only for a run to the rule."""
    if loadgen_validity != "VALID":
        return str(loadgen_validity or "unknown")
    if duration_s is None or duration_s < RULES_MIN_DURATION_S:
        n = "unknown" if duration_s is None else f"{duration_s:.3g}"
        return f"non-compliant (duration {n} s < {RULES_MIN_DURATION_S:g} s)"
    return "VALID"


def status(validity: Mapping[str, str] | str | None) -> str:
    """One line for a benchmark's verdicts per scenario (``{"SingleStream": ..., "Offline": ...}``)."""
    if validity is None:
        return "—"
    if isinstance(validity, str):
        return validity
    distinct = set(validity.values())
    if len(distinct) == 1:
        return distinct.pop()
    return "; ".join(f"{scenario}: {v}" for scenario, v in validity.items())


def _duration_s(entries: dict, scenario: str) -> float | None:
    """How long the run lasted: its minimum duration, or longer where SingleStream's query count took longer."""
    min_ms = entries.get("effective_min_duration_ms")
    if not isinstance(min_ms, (int, float)):
        return None
    seconds = float(min_ms) / 1e3
    count, qps = entries.get("result_query_count"), entries.get("result_qps_with_loadgen_overhead")
    if scenario == "SingleStream" and isinstance(count, (int, float)) and isinstance(qps, (int, float)) and qps > 0:
        seconds = max(seconds, float(count) / float(qps))
    return seconds


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


def _too_few_queries(entries: dict) -> bool:
    """LoadGen's INVALID because it generated too few queries for ``min_duration``: the Offline query was sized
    from too low an expected QPS, or SingleStream's schedule from too high an expected latency."""
    reason = str(entries.get("result_invalid_reason", "")).lower()
    return "expected qps" in reason or "expected latency" in reason


def _run_once(lg, runner: Runner, samples: list[np.ndarray], scenario: str, duration_s: float, final: Path,
              batch: int, **scenario_settings: float) -> dict[str, Any]:
    """One LoadGen run; its logs replace ``final``; returns the detail log's entries."""
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = max(int(duration_s * 1000), 1)
    settings.min_query_count = EARLY_STOPPING_MIN_QUERIES if scenario == "SingleStream" else 1
    settings.performance_sample_count_override = len(samples)
    for name, value in scenario_settings.items():
        setattr(settings, name, value)
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
    return parse_detail_log(final / "mlperf_log_detail.txt")


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
    final = Path(log_dir) / scenario
    # LoadGen generates the queries up front from the expected latency (SingleStream) or QPS (Offline); a host
    # faster than the warm-up said runs out of them before min_duration and LoadGen judges the run INVALID.
    # Such a run is sized again from the latency or rate LoadGen measured.
    single = scenario == "SingleStream"
    # The guess: SingleStream's expected latency (s), or the Offline expected QPS.
    guess = expected_latency_s if single else max(batch / expected_latency_s * OFFLINE_QPS_MARGIN, 1.0)
    resized = 0
    while True:
        setting = ({"single_stream_expected_latency_ns": max(int(guess * 1e9), 1)} if single
                   else {"offline_expected_qps": guess})
        entries = _run_once(lg, runner, samples, scenario, duration_s, final, batch, **setting)
        measured = entries.get("result_mean_latency_ns" if single else "result_samples_per_second")
        if resized == RESIZES or not measured or not _too_few_queries(entries):
            break
        guess = (min(float(measured) / 1e9 * SINGLE_STREAM_LATENCY_MARGIN, guess / 2) if single
                 else max(float(measured) * OFFLINE_QPS_MARGIN, guess * 2))
        resized += 1
    detail = final / "mlperf_log_detail.txt"
    summary = final / "mlperf_log_summary.txt"
    validity = entries.get("result_validity")
    summary_validity = parse_summary_validity(summary)
    if validity is None or validity != summary_validity:
        raise GreenpipeError(
            f"{final}: LoadGen logs disagree or are incomplete "
            f"(detail: {validity!r}, summary: {summary_validity!r})"
        )
    duration_s = _duration_s(entries, scenario)
    reported = verdict(validity, duration_s)
    result: dict[str, Any] = {
        "scenario": scenario,
        "validity": reported,  # what the run is reported as (see verdict)
        "valid": reported == "VALID",
        "loadgen_validity": validity,  # LoadGen's own verdict
        "duration_s": duration_s,
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
            "resized": resized,  # times the run's queries were generated again from the measured latency or rate
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


# The figures a benchmark reports as the median over its repeats, with their spread (min, max).
FIGURES = ("p50_ms", "p90_ms", "p99_ms", "fps")
MIN_REPEATS_FOR_SPREAD = 5  # fewer repeats: a spread is shown, but no difference is judged significant


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    mid = len(known) // 2
    return known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2


def _combined_validity(runs: list[dict[str, Any]], scenario: str) -> tuple[str, str, float | None]:
    """(reported verdict, LoadGen's verdict, shortest duration s) of one scenario over its repeats."""
    mine = [r for r in runs if r is not None]
    own = "VALID" if all(r["loadgen_validity"] == "VALID" for r in mine) else "INVALID"
    durations = [r["duration_s"] for r in mine]
    shortest = None if any(d is None for d in durations) else min(durations)
    return verdict(own, shortest), own, shortest


def benchmark(
    runner: Runner,
    input_shape: Sequence[int],
    single_stream_s: float,
    offline_s: float | None,
    log_dir: str | Path,
    batch: int = 1,
    seed: int = 0,
    repeats: int = 1,
) -> dict[str, Any]:
    """SingleStream (one ``input_shape`` sample per query) then Offline (batches of ``batch``), ``repeats`` times.

    Returns the headline figures (``p50_ms``, ``p90_ms``, ``p99_ms`` from
    SingleStream; ``fps`` = Offline samples/s), each the median over the
    repeats, with ``spread`` = ``{figure: [min, max]}`` over the repeats and
    ``per_repeat`` (each repeat's figures); ``validity`` = each scenario's
    :func:`verdict` (INVALID if LoadGen judged any repeat INVALID; the duration
    is the shortest repeat's); ``valid`` = every scenario VALID, i.e.
    LoadGen-valid and run to the rules' 600 s; plus the first repeat's full
    result per scenario (settings used, LoadGen's own validity, log paths).
    ``offline_s=None`` runs SingleStream only (``fps`` and ``offline`` are None).
    Logs: ``log_dir/<scenario>/``, or ``log_dir/repeat-<i>/<scenario>/`` when ``repeats`` > 1.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: expected at least 1")
    log_dir = Path(log_dir)
    samples = make_samples(input_shape, QSL_SIZE, seed)
    single_latency = estimate_latency_s(runner, samples[0])
    batch_latency = single_latency
    if offline_s is not None and batch > 1:
        batch_latency = estimate_latency_s(runner, np.concatenate([samples[k % len(samples)] for k in range(batch)]))
    singles, offlines = [], []
    for i in range(repeats):  # SingleStream and Offline alternate, so a slow spell of the host shows in both
        where = log_dir / f"repeat-{i}" if repeats > 1 else log_dir
        singles.append(run_scenario(runner, samples, "SingleStream", single_stream_s, where, 1, single_latency))
        if offline_s is not None:
            offlines.append(run_scenario(runner, samples, "Offline", offline_s, where, batch, batch_latency))
    per_repeat = [
        {"p50_ms": s["p50_ms"], "p90_ms": s["p90_ms"], "p99_ms": s["p99_ms"],
         "fps": offlines[i]["samples_per_second"] if offlines else None}
        for i, s in enumerate(singles)
    ]
    scenarios = {"SingleStream": singles, **({"Offline": offlines} if offlines else {})}
    combined = {name: _combined_validity(runs, name) for name, runs in scenarios.items()}
    spread = {}
    for k in FIGURES:
        known = [r[k] for r in per_repeat if r[k] is not None]
        spread[k] = [min(known), max(known)] if known else None
    return {
        **{k: _median([r[k] for r in per_repeat]) for k in FIGURES},
        "repeats": repeats,
        "spread": spread,
        "per_repeat": per_repeat,
        "valid": all(v[0] == "VALID" for v in combined.values()),
        "validity": {name: v[0] for name, v in combined.items()},
        "loadgen_validity": {name: v[1] for name, v in combined.items()},
        "duration_s": {name: v[2] for name, v in combined.items()},
        "input_shape": list(input_shape),
        "single_stream": singles[0],
        "offline": offlines[0] if offlines else None,
    }
