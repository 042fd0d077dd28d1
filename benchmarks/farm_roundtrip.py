"""What a remote device job costs over the loopback farm, against the same deploy run in-process.

    python benchmarks/farm_roundtrip.py                  # ptq8, 3 repeats (after `make demo`)
    python benchmarks/farm_roundtrip.py --variant fp32 --repeats 5

Starts its own loopback farm (Prefect server, rclone S3, workers for cpu-host-1 and cpu-host-2) in a
temporary directory, then runs the ``deploy`` stage of ``--variant`` (``artifacts/compile/<variant>``,
``artifacts/prepared``, LoadGen durations from params.yaml) and prints:

* round trip: the stage's wall time on ``local`` (in-process) and on ``cpu-host-1`` (upload,
  ``run_deployment``, worker pick-up, job, results back into the outputs), medians of ``--repeats``;
  the overhead is their difference (goal <= 10 s);
* concurrency: two jobs at once on cpu-host-1 and cpu-host-2 against one job (goal <= 1.3x), and as a
  control the same ratio for two in-process stages (separate processes) on the same cores;
* memory: a worker's idle RSS (worker process alone, goal <= 300 MB) and the largest RSS of its
  process tree during a job (worker + job process, sampled every 50 ms; goal <= 1 GB), plus the job
  process's own peak (getrusage, reported by the host).

Both simulated hosts share this machine's CPU: on a busy machine all figures are noisy, and two jobs
on one machine's cores contend where two real hosts would not. Every figure is printed with the
machine it was measured on.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ("cpu-host-1", "cpu-host-2")


def _tree_rss_mb(pid: int) -> tuple[float, float]:
    """(RSS of ``pid`` alone, RSS of it and all its descendants), MB."""
    import psutil

    try:
        proc = psutil.Process(pid)
        own = proc.memory_info().rss
        total = own + sum(_safe_rss(c) for c in proc.children(recursive=True))
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    return own / 1e6, total / 1e6


def _safe_rss(proc) -> int:
    import psutil

    try:
        return proc.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


class PeakSampler:
    """Largest RSS of a process tree, sampled every ``interval_s`` seconds in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid, self.interval_s, self.peak_mb = pid, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _tree_rss_mb(self.pid)[1])
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine() -> str:
    from greenpipe.runtime import cpu_model

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{socket.gethostname()} ({cpu_model()}, {os.cpu_count()} cores, {platform.system()}), "
            f"1-min load average {load:.1f} at start")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="ptq8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = ap.parse_args(argv)

    from greenpipe.farm.client import FARM_DIR_ENV
    from greenpipe.farm.stack import LocalStack
    from greenpipe.params import DeviceParams, load_params
    from tasks.deploy import deploy_stage

    compiled = ROOT / "artifacts" / "compile" / args.variant
    data = ROOT / "artifacts" / "prepared"
    if not (compiled / "cpu").is_dir() or not data.is_dir():
        print(f"error: {compiled}/cpu or {data} is missing: run `make demo` (or dvc repro) first",
              file=sys.stderr)  # fmt: skip
        return 2
    params = load_params(args.params)
    devices = {"local": params.deploy.devices["local"]}
    for host in HOSTS:
        devices[host] = DeviceParams(kind="cpu", host=host, pool="cpu-hosts", queue=host, timeout_s=300.0,
                                     retries=0)  # fmt: skip
    params = params.model_copy(update={"deploy": params.deploy.model_copy(update={"devices": devices})})

    where = machine()
    tmp = Path(tempfile.mkdtemp(prefix="greenpipe-farm-bench-"))
    for var in ("PREFECT_API_URL", "GREENPIPE_FARM_BUCKET"):
        os.environ.pop(var, None)  # this benchmark's own stack, whatever the shell points at
    os.environ[FARM_DIR_ENV] = str(tmp / "farm")
    stack = LocalStack(tmp / "farm")
    t0 = time.monotonic()
    running = stack.up(hosts=HOSTS)
    up_s = time.monotonic() - t0
    pids = running.info["worker_pids"]
    try:
        time.sleep(3)  # let the workers settle after their first polls
        idle = {h: _tree_rss_mb(pid)[0] for h, pid in pids.items()}

        def stage(device: str, out: Path) -> dict:
            return deploy_stage(params, args.variant, device, compiled, data, out)

        stage("cpu-host-1", tmp / "warm")  # first use: deployment created, artifact cached on the host
        local_s, remote_s, peaks = [], [], []
        for k in range(args.repeats):
            t = time.monotonic()
            local = stage("local", tmp / f"local-{k}")
            local_s.append(time.monotonic() - t)
            with PeakSampler(pids["cpu-host-1"]) as sampler:
                t = time.monotonic()
                remote = stage("cpu-host-1", tmp / f"remote-{k}")
                remote_s.append(time.monotonic() - t)
            peaks.append(sampler.peak_mb)
            assert remote["quality"] == local["quality"], (remote["quality"], local["quality"])

        pair_s = []
        for k in range(args.repeats):
            threads = [threading.Thread(target=stage, args=(h, tmp / f"pair-{k}-{h}")) for h in HOSTS]
            t = time.monotonic()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            pair_s.append(time.monotonic() - t)
        job_peak = _job_peak(stack)
        # Control: the same two jobs as two in-process stages at once (separate processes, no farm).
        # The simulated hosts share this machine's cores, so this is the floor for the ratio above.
        solo_s, duo_s = [], []
        for k in range(args.repeats):
            solo_s.append(_local_procs(args.variant, compiled, data, tmp / f"solo-{k}", 1))
            duo_s.append(_local_procs(args.variant, compiled, data, tmp / f"duo-{k}", 2))
    finally:
        stack.down()
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    print(f"\nfarm round trip, variant {args.variant}, {args.repeats} repeats (medians), LoadGen "
          f"{params.deploy.single_stream_s:g} s + {params.deploy.offline_s:g} s")  # fmt: skip
    print(f"measured on {where}; simulated hosts {', '.join(HOSTS)} are workers on this same machine")
    print(f"  farm up (servers + 2 workers polling)       {up_s:7.1f} s")
    print(f"  deploy in-process (local)                   {med(local_s):7.1f} s   {_fmt(local_s)}")
    print(f"  deploy on cpu-host-1 through the farm       {med(remote_s):7.1f} s   {_fmt(remote_s)}")
    print(f"  round-trip overhead (goal <= 10 s)          {med(remote_s) - med(local_s):7.1f} s")
    print(f"  two jobs on two hosts at once               {med(pair_s):7.1f} s   {_fmt(pair_s)}")
    print(f"  two jobs / one job (goal <= 1.3x)           {med(pair_s) / med(remote_s):7.2f} x")
    print(f"  control: 2 in-process stages at once / 1     {med(duo_s) / med(solo_s):7.2f} x   "
          f"({med(duo_s):.1f} s / {med(solo_s):.1f} s; same cores, no farm)")  # fmt: skip
    for h, mb in idle.items():
        print(f"  worker idle RSS, {h} (goal <= 300 MB)   {mb:7.0f} MB")
    print(f"  worker + job peak RSS during a job (<= 1 GB) {max(peaks):6.0f} MB")
    if job_peak:
        print(f"  job process's own peak RSS (getrusage)      {job_peak:7.0f} MB")
    return 0


def _job_peak(stack) -> float | None:
    """The largest peak RSS (MB) any job process reported about itself (``job_peak_rss_mb``)."""
    store = stack.store()
    peaks = [
        store.get_json(k).get("body", {}).get("job_peak_rss_mb")  # the signed envelope's summary
        for k in store.list("results/") if k.endswith("summary.json")
    ]
    return max((p for p in peaks if p), default=None)


def _local_procs(variant: str, compiled: Path, data: Path, out: Path, n: int) -> float:
    """Wall time (s) of ``n`` concurrent ``python -m tasks.deploy --device local`` processes."""
    import subprocess

    t = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tasks.deploy", "--variant", variant, "--device", "local",
             "--compiled", str(compiled), "--data", str(data), "--out", str(out / str(i)),
             "--metrics", str(out / f"{i}.json")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for i in range(n)
    ]
    if any(p.wait() for p in procs):
        raise RuntimeError(f"python -m tasks.deploy --device local failed (variant {variant})")
    return time.monotonic() - t


def _fmt(xs: list[float]) -> str:
    return "(" + ", ".join(f"{x:.1f}" for x in xs) + ")"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
