"""Whole-system power from an external wall meter's log (a CSV, not a live source).

The log is ``timestamp,watts`` rows, written by a logging meter (a WT310
behind PTDaemon, a smart plug) or typed in by hand from the meter's display:

    timestamp,watts
    2025-03-01T10:00:00+01:00,212.5
    1740819605.0,213.1
    2025-03-01T10:00:10,N/A          <- an explicit gap

Timestamps are ISO 8601 or epoch seconds; an ISO time without an offset is
local time of the machine reading the log (or UTC with ``naive_as_utc``).
``N/A`` or an empty value marks a gap.  ``#`` starts a comment line.

Interpolation is a **step** (zero-order hold): a reading stands for the power
from its timestamp until the next reading, but for at most ``max_hold_s``
(default three times the log's median spacing).  Step never invents a value
between two readings and keeps a gap a gap, so coverage has one plain meaning:
the part of a window during which some reading was in force.  A meter that
logs its average over each update interval is thereby lagged by at most one
interval, negligible for the minutes-long windows a soak measures.

:meth:`WallMeterLog.average_watts` aligns the log to a run window by wall-clock
time and reports coverage so a report can refuse a window it does not cover::

    avg = WallMeterLog(log="wall.csv").average_watts(run_start, run_end)
    avg.require(min_fraction=0.9, max_gap_s=30)   # GreenpipeError when too thin
"""

from __future__ import annotations

import bisect
import csv
import math
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from greenpipe.errors import DataError, GreenpipeError
from greenpipe.power.base import METERS, Meter, MeterInfo, Sample
from greenpipe import tooling

_NA = {"", "n/a", "na", "nan", "-"}


@dataclass(frozen=True)
class Coverage:
    """How much of a window ``[start_wall, end_wall)`` (epoch s) the log covers.

    covered_s:     seconds during which a reading was in force.
    fraction:      covered_s / window length (0..1).
    largest_gap_s: the longest uncovered stretch inside the window, edges included.
    readings:      readings that fall inside the window (plus one in force at its start).
    """

    start_wall: float
    end_wall: float
    covered_s: float
    fraction: float
    largest_gap_s: float
    readings: int


@dataclass(frozen=True)
class WindowAverage:
    """Time-weighted mean watts over the covered part of a window, with its coverage."""

    watts: float | None
    coverage: Coverage

    def require(self, min_fraction: float = 0.9, max_gap_s: float | None = None) -> "WindowAverage":
        """Self, or GreenpipeError when coverage is below ``min_fraction`` or a gap exceeds ``max_gap_s``."""
        c = self.coverage
        problems = []
        if c.fraction < min_fraction:
            problems.append(f"covers {c.fraction:.0%} of it (needs {min_fraction:.0%})")
        if max_gap_s is not None and c.largest_gap_s > max_gap_s:
            problems.append(f"has a {c.largest_gap_s:.1f} s gap (allowed {max_gap_s:.1f} s)")
        if problems:
            raise GreenpipeError(
                f"wall meter log for window {_iso(c.start_wall)} .. {_iso(c.end_wall)} "
                f"({c.end_wall - c.start_wall:.1f} s) {' and '.join(problems)}. Fix: log the meter for the "
                "whole run (check its clock is in sync with this host), or rerun the window."
            )
        return self


def _iso(t_wall: float) -> str:
    return datetime.fromtimestamp(t_wall, timezone.utc).isoformat(timespec="seconds")


def parse_timestamp(text: str, naive_as_utc: bool = False) -> float:
    """Epoch seconds from ISO 8601 or epoch-seconds text (ValueError when neither)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        stamp = datetime.fromisoformat(text)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc) if naive_as_utc else stamp.astimezone()
        return stamp.timestamp()
    if seconds > 1e11:
        raise ValueError(f"{text} looks like epoch milliseconds; the log needs seconds")
    return seconds


def read_log(path: str | Path, naive_as_utc: bool = False) -> list[tuple[float, float | None]]:
    """``[(epoch s, watts or None for a gap)]`` sorted by time; a repeated timestamp keeps its last row."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(
            f"wall meter log {path} not found. Fix: point log= at the CSV with timestamp,watts rows "
            "that the meter's logger (or you) wrote."
        ) from None
    rows: dict[float, float | None] = {}
    columns = (0, 1)
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = [cell.strip().lower() for cell in row]
        if not rows and "timestamp" in cells and "watts" in cells:  # the header
            columns = (cells.index("timestamp"), cells.index("watts"))
            continue
        try:
            t = parse_timestamp(row[columns[0]], naive_as_utc)
            value = row[columns[1]].strip() if len(row) > columns[1] else ""
            watts = None if value.lower() in _NA else float(value)
        except (ValueError, IndexError) as err:
            raise DataError(f"{path}:{lineno}: {','.join(row)!r} is not timestamp,watts ({err})") from None
        if watts is not None and (watts < 0 or not math.isfinite(watts)):
            raise DataError(f"{path}:{lineno}: watts {watts} is not a power reading")
        rows[t] = watts
    return sorted(rows.items())


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "wall meter CSV log", "fake", "logs the tests write in the documented format (tests/power/test_wallmeter.py)",
    "with the meter logging to wall.csv, set deploy.devices.D: {meter: wallmeter, meter_options: {log: wall.csv}}; "
    "dvc repro soak@fp32-D",
    lambda: tooling.Found(True, "nothing to install: reads the meter's CSV log")),)


@METERS.register("wallmeter")
class WallMeterLog(Meter):
    """A wall meter's CSV log, read by wall-clock time.

    log:          the CSV file; re-read when it changes, so a live log can grow.
    max_hold_s:   how long a reading stands when the next one is late; default
                  3 x the median spacing of the log.
    naive_as_utc: ISO timestamps without an offset are UTC (default: local time).
    """

    name = "wallmeter"

    def __init__(self, log: str | Path, max_hold_s: float | None = None, naive_as_utc: bool = False):
        self.log = Path(log)
        self._max_hold_s, self.naive_as_utc = max_hold_s, naive_as_utc
        self._stamp: tuple[int, int] | None = None
        self._rows: list[tuple[float, float | None]] = []
        # Log times are wall-clock only; Sample.t places them on this process's monotonic clock.
        self._mono_offset = time.time() - time.monotonic()
        self._refresh()

    def _refresh(self) -> None:
        try:
            stat = self.log.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp is None or stamp != self._stamp:
            self._rows = read_log(self.log, self.naive_as_utc)
            self._times = [t for t, _ in self._rows]
            self._stamp = stamp

    @property
    def max_hold_s(self) -> float:
        """Seconds a reading stands at most (the option, else 3 x median spacing, 0 with one reading)."""
        if self._max_hold_s is not None:
            return self._max_hold_s
        spacing = [b - a for a, b in zip(self._times, self._times[1:])]
        return 3 * statistics.median(spacing) if spacing else 0.0

    def _segments(self, start: float, end: float) -> list[tuple[float, float, float | None]]:
        """Step pieces ``(from, to, watts)`` clipped to ``[start, end)``; watts None is a marked gap."""
        hold, rows, pieces = self.max_hold_s, self._rows, []
        first = max(bisect.bisect_right(self._times, start) - 1, 0)
        for i in range(first, len(rows)):
            t, watts = rows[i]
            if t >= end:
                break
            until = min(rows[i + 1][0], t + hold) if i + 1 < len(rows) else t + hold
            if t < start and until <= start:
                continue  # before the window and no longer in force at its start
            lo = max(t, start)
            pieces.append((lo, max(min(until, end), lo), watts))
        return pieces

    def window(self, start_wall: float, end_wall: float) -> list[Sample]:
        """Readings in ``[start_wall, end_wall)`` (epoch s) as Samples; a reading still in force
        at ``start_wall`` comes first, stamped ``start_wall``, so the list is the step function
        over the window."""
        self._refresh()
        return [
            Sample(lo - self._mono_offset, lo, watts)
            for lo, _, watts in self._segments(start_wall, end_wall)
        ]

    def coverage(self, start_wall: float, end_wall: float) -> Coverage:
        """How much of ``[start_wall, end_wall)`` the log covers."""
        return self.average_watts(start_wall, end_wall).coverage

    def average_watts(self, start_wall: float, end_wall: float) -> WindowAverage:
        """Time-weighted mean (step interpolation) over the covered part of the window, with coverage."""
        if end_wall <= start_wall:
            raise GreenpipeError(f"wall meter window ends ({end_wall}) before it starts ({start_wall})")
        self._refresh()
        pieces = self._segments(start_wall, end_wall)
        covered = [(lo, hi, w) for lo, hi, w in pieces if w is not None and hi > lo]
        covered_s = sum(hi - lo for lo, hi, _ in covered)
        gaps, edge = [], start_wall
        for lo, hi, _ in covered:
            gaps.append(lo - edge)
            edge = hi
        gaps.append(end_wall - edge)
        length = end_wall - start_wall
        watts = sum(w * (hi - lo) for lo, hi, w in covered) / covered_s if covered_s > 0 else None
        return WindowAverage(
            watts,
            Coverage(start_wall, end_wall, covered_s, covered_s / length, max(gaps), len(pieces)),
        )

    def sample(self) -> Sample:
        """The latest reading at or before now, stamped with its own (log) time; watts None if none yet."""
        self._refresh()
        now = time.time()
        i = bisect.bisect_right(self._times, now) - 1
        if i < 0:
            return Sample.now(None)
        t_wall, watts = self._rows[i]
        return Sample(t_wall - self._mono_offset, t_wall, watts)

    def describe(self) -> MeterInfo:
        spacing = [b - a for a, b in zip(self._times, self._times[1:])]
        every = f"about every {statistics.median(spacing):g} s" if spacing else "once"
        return MeterInfo(
            name=self.name,
            scope="system",
            what=f"whole-system power at the wall socket from the external meter log {self.log}",
            measured=True,
            units="watts as logged; timestamps ISO 8601 or epoch s",
            resolution=f"readings logged {every}; step-held for at most {self.max_hold_s:g} s; accuracy is "
                       "the meter's own and alignment depends on its clock agreeing with this host's",
        )
