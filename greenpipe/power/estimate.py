"""The fallback when nothing can be read: CPU power ESTIMATED from utilisation.

    watts = idle_w + (tdp_w - idle_w) x cpu_share

``cpu_share`` (0..1) is the busy fraction of all CPU time between two
samples, from ``/proc/stat`` (the whole machine) or, with ``pid``, that
process's ``utime + stime`` from ``/proc/<pid>/stat`` over the same total.
Without a TDP the meter assumes 15 W per core and an idle draw of 10 % of
TDP, and says so in its description.

This is a model, not a measurement: :meth:`EstimateMeter.describe` returns
``measured=False``, scope ``estimate`` and a description that starts with
:data:`ESTIMATE_LABEL`, which every report using it must carry.

    meter = EstimateMeter(tdp_w=65, idle_w=8)       # whole machine
    meter = EstimateMeter(tdp_w=65, pid=os.getpid()) # this process only
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from greenpipe.errors import GreenpipeError
from greenpipe.power.base import METERS, Meter, MeterInfo, Sample
from greenpipe import tooling

ESTIMATE_LABEL = "ESTIMATE (CPU utilisation x TDP share), not a measurement"
ASSUMED_W_PER_CORE = 15.0  # a mid-range desktop/server core at full load; deliberately round
ASSUMED_IDLE_SHARE = 0.10  # idle draw as a share of TDP when none is given


def read_cpu_ticks(proc_root: str | Path = "/proc") -> tuple[int, int]:
    """``(busy, total)`` CPU ticks (USER_HZ) of all CPUs since boot, from ``<proc_root>/stat``.

    total = user + nice + system + idle + iowait + irq + softirq + steal
    (guest time is already inside user/nice); busy = total - idle - iowait.
    """
    path = Path(proc_root) / "stat"
    lines = path.read_text().splitlines()
    line = lines[0] if lines else ""
    fields = line.split()
    if not fields:
        raise GreenpipeError(
            f"{path} read empty: no aggregate 'cpu' line to take CPU time from (a procfs that is not "
            "mounted, or a file read while something replaced it in place). Fix: on Linux leave "
            "proc_root=/proc (procfs mounted); a test tree must replace its stat file whole (write a new "
            "file, then rename it over)."
        )
    if fields[0] != "cpu":
        raise GreenpipeError(f"{path} does not start with the aggregate 'cpu' line: {line!r}")
    try:
        values = [int(v) for v in fields[1:9]]
    except ValueError:
        values = []
    if len(values) < 4:  # user nice system idle: every kernel has these; later columns default to 0
        raise GreenpipeError(
            f"{path} is truncated or not procfs: its aggregate line {line!r} lacks the integer columns user, "
            "nice, system and idle (proc(5)). Fix: on Linux leave proc_root=/proc; a test tree must write "
            "the whole line and replace the file whole (write a new file, then rename it over)."
        )
    values += [0] * (8 - len(values))
    user, nice, system, idle, iowait, irq, softirq, steal = values
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait, total


def read_process_ticks(pid: int, proc_root: str | Path = "/proc") -> int:
    """utime + stime ticks (USER_HZ) of process ``pid`` (its threads included, reaped children not)."""
    path = Path(proc_root) / str(pid) / "stat"
    text = path.read_text()
    after_comm = text.rsplit(")", 1)[-1].split()  # comm may hold spaces and ')': split after the last one
    try:
        return int(after_comm[11]) + int(after_comm[12])  # fields 14 and 15 of proc(5)
    except (IndexError, ValueError):
        raise GreenpipeError(
            f"{path} is empty or truncated ({text[:80]!r}): no utime/stime (fields 14 and 15 of proc(5)). "
            "Fix: on Linux leave proc_root=/proc and pass the pid of a running process; a test tree must "
            "replace the file whole."
        ) from None


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "/proc/stat (CPU utilisation)", "real", "this host's /proc/stat (tests/power/test_power_estimate.py, every soak)",
    "pytest tests/power/test_power_estimate.py", tooling.path("/proc/stat", "procfs")),)


@METERS.register("estimate")
class EstimateMeter(Meter):
    """Estimated CPU power from utilisation (NOT a measurement).

    tdp_w:     the CPU's TDP in W; default ``15 W x cores`` (an assumption, labelled).
    idle_w:    draw at zero utilisation in W; default 10 % of TDP (an assumption, labelled).
    pid:       estimate for this process's share only; default the whole machine.
    proc_root: where procfs is (tests point it at a temp tree).
    cores:     core count for the default TDP; default ``os.cpu_count()``.
    """

    name = "estimate"

    def __init__(self, tdp_w: float | None = None, idle_w: float | None = None, pid: int | None = None,
                 proc_root: str | Path = "/proc", cores: int | None = None):
        self.proc_root, self.pid = Path(proc_root), pid
        self.cores = cores or os.cpu_count() or 1
        self.tdp_given, self.idle_given = tdp_w is not None, idle_w is not None
        self.tdp_w = float(tdp_w) if tdp_w is not None else ASSUMED_W_PER_CORE * self.cores
        self.idle_w = float(idle_w) if idle_w is not None else ASSUMED_IDLE_SHARE * self.tdp_w
        if not 0 <= self.idle_w <= self.tdp_w or self.tdp_w <= 0:
            raise GreenpipeError(
                f"estimate meter: needs 0 <= idle_w <= tdp_w and tdp_w > 0, got idle_w={self.idle_w}, "
                f"tdp_w={self.tdp_w}. Fix: pass the CPU's TDP (W) from its datasheet and a lower idle_w."
            )
        try:
            self._last = self._ticks()
        except FileNotFoundError as err:
            what = f"process {pid}" if pid is not None else "the machine"
            raise GreenpipeError(
                f"estimate meter: cannot read CPU time of {what}: {err.filename} is missing. "
                "Fix: on Linux leave proc_root=/proc; pass the pid of a running process."
            ) from None
        self._last_t = time.monotonic()
        self._share: float | None = None
        self._energy_j = 0.0

    def _ticks(self) -> tuple[int, int]:
        """(ticks counted as busy for the estimate, total ticks of all CPUs)."""
        busy, total = read_cpu_ticks(self.proc_root)
        if self.pid is not None:
            busy = read_process_ticks(self.pid, self.proc_root)
        return busy, total

    def watts_at(self, share: float) -> float:
        """The model: W at CPU share ``share`` (0..1)."""
        return self.idle_w + (self.tdp_w - self.idle_w) * share

    def sample(self) -> Sample:
        t = time.monotonic()
        try:
            busy, total = self._ticks()
        except FileNotFoundError:
            if self.pid is None:
                raise
            return Sample(t, time.time(), None, self._energy_j)  # the process ended: nothing to attribute
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        if d_total > 0:  # else no tick elapsed (samples < 1/USER_HZ apart): keep the last share
            self._share = min(max(d_busy / d_total, 0.0), 1.0)
            self._last = (busy, total)
        watts = self.watts_at(self._share) if self._share is not None else None
        if watts is not None:
            self._energy_j += watts * (t - self._last_t)
        self._last_t = t
        return Sample(t, time.time(), watts, self._energy_j)

    @property
    def cpu_share(self) -> float | None:
        """The CPU share (0..1) behind the latest sample; None before the first tick elapsed."""
        return self._share

    def describe(self) -> MeterInfo:
        tdp = "given" if self.tdp_given else f"ASSUMED {ASSUMED_W_PER_CORE:g} W/core x {self.cores} cores"
        idle = "given" if self.idle_given else f"ASSUMED {ASSUMED_IDLE_SHARE:.0%} of TDP"
        whose = f"process {self.pid}'s" if self.pid is not None else "whole-machine"
        return MeterInfo(
            name=self.name,
            scope="estimate",
            what=f"{ESTIMATE_LABEL}: idle {self.idle_w:g} W ({idle}) + (TDP {self.tdp_w:g} W ({tdp}) - idle) "
                 f"x {whose} CPU share from {self.proc_root}",
            measured=False,
            units="W; energy_j integrates the estimate over time",
            resolution="CPU time advances in 1/USER_HZ ticks (usually 10 ms) per core; memory, disk, "
                       "accelerators, fans and PSU losses are not modelled",
        )
