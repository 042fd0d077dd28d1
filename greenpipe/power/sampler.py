"""Background sampling of a meter at a fixed rate, in a daemon thread.

    with Sampler(meter, hz=10).on_window(checkpoint, window_s=60) as sampler:
        run_the_workload()
    samples = sampler.samples

A thread is enough: one ``sample()`` is a few small file reads, an NVML call
or a subprocess wait, all of which release the GIL while they block, and the
workloads being measured (numpy, ONNX Runtime, torch, VART) release it while
they compute.  Measured with ``python -m greenpipe.power.overhead`` (estimate
meter, 2-vCPU VM shared with other work, 512x512 float32 matmul loop, 30
paired repeats of 0.5 s): the sampler thread alone uses about 0.05-0.1 % of a
core at 1 Hz, 0.4-0.5 % at 10 Hz and 2-4 % at 100 Hz (each wake-up costs a
few hundred µs of CPU there; ``sample()`` itself 25-30 µs).  Matmul
throughput with one BLAS thread changed by -0.5 % at 1 Hz, -1.1 % at 10 Hz
and -3 to -8 % at 100 Hz (medians; run-to-run spread of several % from the
other load).  So sample at 1-10 Hz; 100 Hz costs a few percent.

Sample times follow a fixed schedule (``start + k / hz``); when a sample takes
longer than the period (xbutil takes about a second) the missed ticks are
skipped rather than bunched up.  A sampling or callback error stops the
thread and is raised again by :meth:`Sampler.stop`, so a broken meter never
yields a silently empty series.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from greenpipe.errors import GreenpipeError
from greenpipe.power.base import Meter, Sample

WindowCallback = Callable[[list[Sample]], None]


@dataclass
class _Window:
    callback: WindowCallback
    window_s: float
    end: float = 0.0  # monotonic s at which the current window closes
    first: int = 0  # index of the current window's first sample


class Sampler:
    """Samples ``meter`` ``hz`` times a second between :meth:`start` and :meth:`stop`."""

    def __init__(self, meter: Meter, hz: float):
        if not hz > 0:
            raise GreenpipeError(f"sampler: hz must be > 0, got {hz}")
        self.meter, self.hz = meter, float(hz)
        self._samples: list[Sample] = []
        self._windows: list[_Window] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.started: float | None = None  # monotonic s of start(); windows are counted from it

    def on_window(self, callback: WindowCallback, window_s: float) -> "Sampler":
        """Call ``callback(samples)`` with each finished ``window_s``-second window's samples.

        Windows are consecutive from :meth:`start` (by ``Sample.t``); the
        callback runs in the sampler thread, so keep it short (append to a
        checkpoint file).  The last, partial window is delivered by :meth:`stop`.
        """
        if self._thread is not None:
            raise GreenpipeError("sampler: register on_window callbacks before start()")
        if not window_s > 0:
            raise GreenpipeError(f"sampler: window_s must be > 0, got {window_s}")
        self._windows.append(_Window(callback, float(window_s)))
        return self

    def start(self) -> "Sampler":
        if self._thread is not None:
            raise GreenpipeError("sampler: already started; a Sampler runs once")
        self.started = start = time.monotonic()
        for window in self._windows:
            window.end = start + window.window_s
        self._thread = threading.Thread(target=self._run, args=(start,), name=f"sampler-{self.meter.name}",
                                        daemon=True)  # never keeps the interpreter alive
        self._thread.start()
        return self

    def _run(self, start: float) -> None:
        period, tick = 1.0 / self.hz, start
        try:
            while not self._halt.is_set():
                sample = self.meter.sample()
                with self._lock:
                    self._samples.append(sample)
                    count = len(self._samples)
                for window in self._windows:
                    if sample.t >= window.end:  # this sample opens a new window: hand over the last one
                        self._deliver(window, count - 1)
                        while window.end <= sample.t:
                            window.end += window.window_s
                tick += period
                delay = tick - time.monotonic()
                if delay < 0:  # the meter is slower than the rate: skip missed ticks
                    tick, delay = time.monotonic(), 0.0
                self._halt.wait(delay)
        except BaseException as err:  # surfaced by stop()
            self._error = err

    def _deliver(self, window: _Window, upto: int) -> None:
        with self._lock:
            batch = self._samples[window.first:upto]
        window.first = upto
        if batch:
            window.callback(batch)

    def stop(self) -> list[Sample]:
        """Stop sampling (at once, or after a sample in progress) and return every sample taken."""
        if self._thread is None:
            raise GreenpipeError("sampler: stop() before start()")
        self._halt.set()
        self._thread.join()
        if self._error is None:
            try:
                for window in self._windows:
                    self._deliver(window, len(self._samples))
            except BaseException as err:
                self._error = err
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        return self.samples

    @property
    def samples(self) -> list[Sample]:
        """A copy of the samples so far."""
        with self._lock:
            return list(self._samples)

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, exc_type, *exc: object) -> None:
        if self._thread is not None and not self._halt.is_set():
            try:
                self.stop()
            except BaseException:
                if exc_type is None:
                    raise  # don't hide the workload's own exception behind the sampler's
