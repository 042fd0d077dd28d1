"""The soak loop: energy per inference measured the way MLPerf Power does.

    plan = SoakPlan(idle_s=2, warmup_s=3, duration_s=12, window_s=3, sample_hz=10)
    result = run_soak(load_workload, meter, plan, Checkpoint(ckpt_dir / "timeseries.jsonl"), key)

What a soak does, in order:

1. **idle**: sample the meter for ``idle_s`` with nothing loaded (the baseline
   that dynamic watts are taken against);
2. **load** the workload (``load_workload()`` returns a callable running one
   batch and returning how many inferences it ran);
3. **warm-up**: run it back to back for ``warmup_s`` with the meter sampled
   (recorded for the plot, excluded from every figure);
4. **measure**: run it for ``duration_s`` in consecutive windows of
   ``window_s``.  Power and performance of a window come from the same
   interval: the inferences that *completed* in ``(t0, t1]`` and the meter
   samples stamped in ``(t0, t1]`` on the same monotonic clock; windows are
   contiguous (the next starts where the last ended), so no sample and no
   inference falls between two windows;
5. **overhead** (optional): alternating blocks of the workload without and with
   a sampler at the same rate, to state what sampling cost in throughput.

Each finished window is appended to a JSON-lines checkpoint and fsync'd, so a
soak killed at any moment loses at most the window in progress.  Run again
with the same ``key`` it resumes: idle baseline kept, a fresh warm-up (the
workload was reloaded), then the missing windows; the summary says
``resumed`` and how long the gap was.  :func:`summarize` turns any checkpoint,
complete or not, into the figures (``partial`` when windows are missing).

Latency percentiles are read from a log-spaced histogram kept per window
(:data:`BINS_PER_DECADE` bins per decade: about 2.3 % wide, so a percentile
is exact to about 1.2 %), which merges across windows and resumed runs and
keeps the checkpoint small whatever the throughput.

Units: seconds, watts, joules; ``mj_per_inference`` in millijoules.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from greenpipe.errors import GreenpipeError
from greenpipe.io import atomic_write_bytes
from greenpipe.power.base import Meter
from greenpipe.power.sampler import Sampler

BINS_PER_DECADE = 100
FORMAT = "greenpipe.soak/1"
OVERHEAD_GOAL = 0.01  # the sampler may cost at most 1 % of measured throughput

RunOnce = Callable[[], int]  # runs one batch, returns the number of inferences it ran
Publish = Callable[[dict], None]


@dataclass(frozen=True)
class SoakPlan:
    """Durations (s) and rates of one soak; ``duration_s`` is split into ``n_windows`` windows."""

    idle_s: float
    warmup_s: float
    duration_s: float
    window_s: float
    sample_hz: float
    overhead_pairs: int = 0
    overhead_block_s: float = 1.0

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and self.duration_s >= self.window_s and self.sample_hz > 0):
            raise GreenpipeError(
                f"soak plan: needs window_s > 0, duration_s >= window_s and sample_hz > 0, got window_s="
                f"{self.window_s}, duration_s={self.duration_s}, sample_hz={self.sample_hz}"
            )

    @property
    def n_windows(self) -> int:
        """Measured windows; the measured duration is ``n_windows * window_s`` (>= duration_s)."""
        return math.ceil(self.duration_s / self.window_s - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- latency histogram ---------------------------------------------------------------------------

def latency_bin(ms: float) -> int:
    """Histogram bin of a latency in ms (log-spaced, :data:`BINS_PER_DECADE` per decade)."""
    return math.floor(math.log10(max(ms, 1e-6)) * BINS_PER_DECADE)


def merge_hist(hists: list[dict]) -> dict[int, int]:
    out: dict[int, int] = {}
    for hist in hists:
        for b, n in hist.items():
            out[int(b)] = out.get(int(b), 0) + int(n)
    return out


def hist_percentile(hist: dict, q: float) -> float | None:
    """The ``q``-th percentile (0..100) in ms: the geometric centre of the bin holding it."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = q / 100 * total, 0
    for b in sorted(hist, key=int):
        seen += hist[b]
        if seen >= rank:
            return 10 ** ((int(b) + 0.5) / BINS_PER_DECADE)
    return 10 ** ((int(max(hist, key=int)) + 0.5) / BINS_PER_DECADE)


# -- checkpoint ----------------------------------------------------------------------------------

class Checkpoint:
    """An append-only JSON-lines file: a ``header`` line, then ``idle``, ``window`` and ``resume`` records.

    Every append is flushed and fsync'd.  A line torn by a kill mid-write is
    dropped on reading (it can only be the last one).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a torn last line from a kill mid-write
        return records

    def repair(self) -> list[dict]:
        """Cut a torn last line off the file (so appends start on a line of their own); the records."""
        records = self.read()
        good = "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n" for r in records)
        if self.path.exists() and self.path.read_text() != good:
            atomic_write_bytes(self.path, good.encode())
        return records

    def start(self, header: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.append({"kind": "header", "format": FORMAT, **header})

    def append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def soak_key(identity: dict) -> str:
    """A short hash of what must not change between a soak and its resumption."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- the loop ------------------------------------------------------------------------------------

def _power(samples: list, t0: float, t1: float) -> dict:
    watts = [s.watts for s in samples if t0 < s.t <= t1 and s.watts is not None]
    return {
        "avg_w": statistics.fmean(watts) if watts else None,
        "max_w": max(watts) if watts else None,
        "samples": len(watts),
    }


def measure_idle(meter: Meter, seconds: float, hz: float) -> dict:
    """Mean and max watts over ``seconds`` with nothing of ours running (the idle baseline)."""
    sampler = Sampler(meter, hz)
    t0 = time.monotonic()
    sampler.start()
    time.sleep(seconds)
    samples = sampler.stop()
    t1 = time.monotonic()
    return {"kind": "idle", "seconds": t1 - t0, "t_wall": time.time(), **_power(samples, t0 - 1, t1)}


def _window(run: RunOnce, sampler: Sampler, t0: float, length: float) -> tuple[dict, float]:
    """Run back to back until ``t0 + length``; the window's record and its actual end (monotonic s)."""
    end, count, runs, hist = t0 + length, 0, 0, {}
    t_wall0 = time.time() - (time.monotonic() - t0)
    now = time.monotonic()
    while now < end:
        start = time.perf_counter()
        count += run()
        b = latency_bin((time.perf_counter() - start) * 1e3)
        hist[b] = hist.get(b, 0) + 1
        runs += 1
        now = time.monotonic()
    seconds = now - t0
    record = {
        "seconds": seconds,
        "t_wall_start": t_wall0,
        "t_wall_end": t_wall0 + seconds,
        "inferences": count,
        "runs": runs,
        "fps": count / seconds,
        **_power(sampler.samples, t0, now),
        "p50_ms": hist_percentile(hist, 50),
        "p90_ms": hist_percentile(hist, 90),
        "latency_hist": {str(k): v for k, v in sorted(hist.items())},
    }
    return record, now


def sampler_overhead(run: RunOnce, meter: Meter, hz: float, pairs: int, block_s: float) -> dict:
    """Throughput without and with a sampler at ``hz``, in alternating blocks of ``block_s``.

    The order alternates within each pair (off-on, on-off, ...) so drift hits
    both sides alike; ``change`` is the median of the paired ratios minus one
    (negative: sampling slowed the workload).
    """
    without, with_, ratios = [], [], []
    for k in range(pairs):
        pair = {}
        for sampled in ((False, True) if k % 2 == 0 else (True, False)):
            sampler = Sampler(meter, hz).start() if sampled else None
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < block_s:
                count += run()
            pair[sampled] = count / (time.perf_counter() - t0)
            if sampler is not None:
                sampler.stop()
        without.append(pair[False])
        with_.append(pair[True])
        ratios.append(pair[True] / pair[False] - 1)
    change = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [change, change, change]
    return {
        "pairs": pairs,
        "block_s": block_s,
        "sample_hz": hz,
        "fps_without_sampler": statistics.median(without),
        "fps_with_sampler": statistics.median(with_),
        "change": change,
        "change_iqr": [quartiles[0], quartiles[2]],
        "goal": f"sampling costs < {OVERHEAD_GOAL:.0%} of throughput",
        "goal_met": change > -OVERHEAD_GOAL,
        "note": "median of paired (with / without - 1) over alternating blocks; on a shared or small machine "
                "the spread (IQR) can exceed the effect",
    }


def run_soak(load_workload: Callable[[], RunOnce], meter: Meter, plan: SoakPlan, checkpoint: Checkpoint,
             header: dict, publish: Publish | None = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) a soak; return :func:`summarize` of the complete checkpoint.

    ``header`` describes the run and must hold ``key`` (:func:`soak_key`): a
    checkpoint with the same key is resumed, one with another key is started
    over (the summary says so).  ``publish`` receives every record as it is
    checkpointed (e.g. to put it in the S3 result store).
    """
    say = progress or (lambda _msg: None)
    emit = publish or (lambda _rec: None)
    records = checkpoint.repair()
    discarded = None
    if records and (records[0].get("kind") != "header" or records[0].get("key") != header["key"]):
        discarded = f"a checkpoint of another soak (key {records[0].get('key')!r}) was discarded"
        records = []
    done = sum(1 for r in records if r.get("kind") == "window" and r["phase"] == "measure")
    has_idle = any(r.get("kind") == "idle" for r in records)
    if not records:
        checkpoint.start(header)
        emit(checkpoint.read()[0])
    if not has_idle:
        say(f"idle baseline: {plan.idle_s:g} s")
        idle = measure_idle(meter, plan.idle_s, plan.sample_hz) if plan.idle_s > 0 else {
            "kind": "idle", "seconds": 0.0, "t_wall": time.time(), "avg_w": None, "max_w": None, "samples": 0}
        checkpoint.append(idle)
        emit(idle)
    if done >= plan.n_windows:
        return summarize(checkpoint.read(), plan, discarded=discarded)

    last = [r for r in records if r.get("kind") == "window"]
    run = load_workload()
    sampler = Sampler(meter, plan.sample_hz).start()
    try:
        if last:
            resume = {"kind": "resume", "after_window": done, "t_wall": time.time(),
                      "gap_s": time.time() - last[-1]["t_wall_end"]}
            checkpoint.append(resume)
            emit(resume)
            say(f"resuming after {done} of {plan.n_windows} windows ({resume['gap_s']:.0f} s gap)")
        t = sampler.started
        warm_left, k = plan.warmup_s, 0
        while warm_left > 1e-9:  # warm-up, in windows too: recorded for the plot, never summarized
            record, t_end = _window(run, sampler, t, min(plan.window_s, warm_left))
            warm_left -= t_end - t
            t = t_end
            record = {"kind": "window", "phase": "warmup", "index": k, **record}
            checkpoint.append(record)
            emit(record)
            k += 1
        for index in range(done, plan.n_windows):
            record, t = _window(run, sampler, t, plan.window_s)
            record = {"kind": "window", "phase": "measure", "index": index, **record}
            checkpoint.append(record)
            emit(record)
            info = meter.describe()
            kind = "measured" if info.measured else "ESTIMATE"
            watts = "—" if record["avg_w"] is None else f"{record['avg_w']:.1f} W ({kind}, {info.name} meter)"
            say(f"window {index + 1}/{plan.n_windows}: {record['fps']:.1f} fps, {watts}")
    finally:
        sampler.stop()
    overhead = None
    if plan.overhead_pairs > 0:
        say(f"sampler overhead: {plan.overhead_pairs} pairs of {plan.overhead_block_s:g} s blocks")
        overhead = {"kind": "overhead", **sampler_overhead(
            run, meter, plan.sample_hz, plan.overhead_pairs, plan.overhead_block_s)}
        checkpoint.append(overhead)
        emit(overhead)
    return summarize(checkpoint.read(), plan, discarded=discarded)


# -- figures -------------------------------------------------------------------------------------

def summarize(records: list[dict], plan: SoakPlan, discarded: str | None = None) -> dict:
    """The soak's figures from its checkpoint records (complete or partial).

    Power is the time-weighted mean of the windows' mean watts; energy is that
    times the measured seconds, so energy and throughput cover exactly the
    same windows.  Windows without a power sample (a meter slower than the
    window) count for throughput but not for power, and are listed.
    """
    if not records or records[0].get("kind") != "header":
        raise GreenpipeError("soak checkpoint: empty or without a header line; nothing to report")
    header = records[0]
    idle = next((r for r in records if r.get("kind") == "idle"), None)
    windows = [r for r in records if r.get("kind") == "window" and r["phase"] == "measure"]
    resumes = [r for r in records if r.get("kind") == "resume"]
    overhead = next((r for r in reversed(records) if r.get("kind") == "overhead"), None)
    measured_s = sum(w["seconds"] for w in windows)
    inferences = sum(w["inferences"] for w in windows)
    powered = [w for w in windows if w["avg_w"] is not None]
    powered_s = sum(w["seconds"] for w in powered)
    avg_w = sum(w["avg_w"] * w["seconds"] for w in powered) / powered_s if powered_s else None
    idle_w = idle["avg_w"] if idle else None
    fps = inferences / measured_s if measured_s else None
    per_window = [w["fps"] for w in windows]
    energy_j = avg_w * measured_s if avg_w is not None else None
    dynamic_w = avg_w - idle_w if avg_w is not None and idle_w is not None else None
    hist = merge_hist([w["latency_hist"] for w in windows])
    timeline = [{k: r[k] for k in ("phase", "index", "t_wall_start", "seconds", "fps", "avg_w", "max_w")}
                for r in records if r.get("kind") == "window"]
    return {
        "format": FORMAT,
        "key": header["key"],
        "partial": len(windows) < plan.n_windows,
        "windows_done": len(windows),
        "windows_planned": plan.n_windows,
        "resumed": bool(resumes),
        "resumes": [{"after_window": r["after_window"], "gap_s": r["gap_s"]} for r in resumes],
        "discarded_checkpoint": discarded,
        "plan": plan.to_dict(),
        "measured_s": measured_s,
        "inferences": inferences,
        "fps": fps,
        "fps_window_mean": statistics.fmean(per_window) if per_window else None,
        "fps_window_std": statistics.stdev(per_window) if len(per_window) > 1 else (0.0 if per_window else None),
        "fps_window_min": min(per_window) if per_window else None,
        "avg_w": avg_w,
        "max_w": max((w["max_w"] for w in powered), default=None),
        "idle_w": idle_w,
        "idle_s": idle["seconds"] if idle else None,
        "dynamic_w": dynamic_w,
        "energy_j": energy_j,
        "mj_per_inference": energy_j / inferences * 1e3 if energy_j is not None and inferences else None,
        "dynamic_mj_per_inference": (dynamic_w * measured_s / inferences * 1e3
                                     if dynamic_w is not None and inferences else None),
        "inferences_per_j": inferences / energy_j if energy_j else None,
        "windows_without_power": [w["index"] for w in windows if w["avg_w"] is None],
        "power_samples": sum(w["samples"] for w in windows),
        "p50_ms": hist_percentile(hist, 50),
        "p90_ms": hist_percentile(hist, 90),
        "p99_ms": hist_percentile(hist, 99),
        "latency_note": f"per-run latency from a log histogram ({BINS_PER_DECADE} bins/decade, ~1.2 % resolution)",
        "sampler_overhead": {k: v for k, v in overhead.items() if k != "kind"} if overhead else None,
        "timeline": timeline,
    }
