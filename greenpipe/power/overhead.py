"""What background sampling costs a compute-bound workload.

    python -m greenpipe.power.overhead [--meter estimate] [--seconds 1] [--repeats 15]

Runs a numpy float32 matmul loop for ``seconds`` with no sampler, then with
the meter sampled at each rate, ``repeats`` times over, and prints each rate's
median throughput change against the no-sampler run of the same repeat
(paired, so that other load on the machine hits both sides alike).  It also
times ``sample()`` itself and the sampler thread's CPU use with nothing else
running, which other load on a shared machine does not disturb.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from greenpipe.power.sampler import Sampler


def _matmuls(seconds: float, n: int) -> float:
    """Matmuls per second of an n x n float32 loop run for ``seconds``."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        count += 1
    return count / elapsed


def measure_overhead(meter_name: str = "estimate", rates: tuple[float, ...] = (1.0, 10.0, 100.0),
                     seconds: float = 1.0, repeats: int = 15, n: int = 512, **options: Any) -> dict:
    """Matmul throughput with no sampler and at each rate, compared pairwise within each repeat.

    Each repeat runs every setting back to back (no sampler first) and takes
    each rate's throughput relative to that repeat's no-sampler run; the
    median of those paired ratios resists other load on a shared machine
    better than comparing medians of raw throughput.
    """
    from greenpipe.power import open_meter

    with open_meter(meter_name, **options) as meter:
        calls = 1000
        start = time.perf_counter()
        for _ in range(calls):
            meter.sample()
        sample_us = (time.perf_counter() - start) / calls * 1e6
        # The sampler's own CPU use, with nothing else running in this process: robust to other
        # load on the machine, unlike the throughput comparison below.
        cpu_share = {}
        for rate in rates:
            sampler = Sampler(meter, rate)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            sampler.start()
            time.sleep(max(2.0, 5 / rate))
            sampler.stop()
            cpu_share[rate] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        _matmuls(0.5, n)  # warm BLAS threads and caches
        runs: dict[float, list[float]] = {0.0: [], **{r: [] for r in rates}}
        for _ in range(repeats):
            for rate in runs:
                if rate == 0.0:
                    runs[rate].append(_matmuls(seconds, n))
                else:
                    sampler = Sampler(meter, rate).start()
                    runs[rate].append(_matmuls(seconds, n))
                    sampler.stop()
    ratios = {rate: [r / b - 1 for r, b in zip(v, runs[0.0])] for rate, v in runs.items() if rate}
    return {
        "meter": meter_name,
        "sample_us": sample_us,
        "sampler_cpu_share": cpu_share,
        "matmul_n": n,
        "seconds": seconds,
        "repeats": repeats,
        "per_s": {rate: statistics.median(v) for rate, v in runs.items()},
        "change": {rate: statistics.median(v) for rate, v in ratios.items()},
        "change_iqr": {rate: tuple(statistics.quantiles(v, n=4)[::2]) for rate, v in ratios.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meter", default="estimate")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--n", type=int, default=512)
    args = parser.parse_args(argv)
    result = measure_overhead(args.meter, seconds=args.seconds, repeats=args.repeats, n=args.n)
    print(f"meter {result['meter']}: one sample() takes {result['sample_us']:.1f} µs")
    for rate, share in result["sampler_cpu_share"].items():
        print(f"  sampler alone at {rate:g} Hz uses {share:.3%} of one core")
    print(f"{args.n}x{args.n} float32 matmul, {args.repeats} repeats of {args.seconds:g} s per setting:")
    for rate, per_s in result["per_s"].items():
        if rate:
            lo, hi = result["change_iqr"][rate]
            change = f"{result['change'][rate]:+.2%} vs no sampler (paired; IQR {lo:+.2%} .. {hi:+.2%})"
        else:
            change = "baseline"
        label = f"{rate:g} Hz" if rate else "no sampler"
        print(f"  {label:>10}: median {per_s:7.1f} matmul/s  {change}")


if __name__ == "__main__":
    main()
