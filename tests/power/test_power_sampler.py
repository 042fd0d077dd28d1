import threading
import time

import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.power.estimate import EstimateMeter
from greenpipe.power.sampler import Sampler


def test_collects_about_hz_times_seconds_samples():
    sampler = Sampler(EstimateMeter(), hz=20).start()
    time.sleep(0.5)
    samples = sampler.stop()
    # 0.5 s at 20 Hz: ticks at 0, 0.05, ... 0.5 -> 10 or 11; allow a loaded machine a little slack
    assert 7 <= len(samples) <= 12
    gaps = [b.t - a.t for a, b in zip(samples, samples[1:])]
    assert all(gap > 0 for gap in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(0.05, rel=0.3)
    assert samples[-1].energy_j >= samples[0].energy_j


def test_stop_is_prompt_even_with_a_slow_rate():
    sampler = Sampler(EstimateMeter(), hz=0.2).start()  # next tick would be 5 s away
    time.sleep(0.05)
    begin = time.monotonic()
    samples = sampler.stop()
    assert time.monotonic() - begin < 0.5
    assert len(samples) == 1
    assert not any(t.name.startswith("sampler-") for t in threading.enumerate())


def test_window_callback_gets_each_window_and_stop_flushes_the_rest():
    windows = []
    with Sampler(EstimateMeter(), hz=50).on_window(windows.append, window_s=0.1) as sampler:
        time.sleep(0.55)
    samples = sampler.samples
    assert len(windows) >= 4
    assert [s for window in windows for s in window] == samples  # nothing lost, nothing twice
    start = sampler.started
    for window in windows:
        first = int((window[0].t - start) // 0.1)
        assert all(int((s.t - start) // 0.1) == first for s in window)  # one window each


def test_a_failing_meter_is_raised_by_stop(proc_tree):
    meter = EstimateMeter(proc_root=proc_tree.root)
    sampler = Sampler(meter, hz=100).start()
    time.sleep(0.03)
    # Replace the file whole, as the kernel's /proc/stat is never seen half-written.
    (proc_tree.root / "stat.new").write_text("garbage\n")
    (proc_tree.root / "stat.new").replace(proc_tree.root / "stat")
    time.sleep(0.05)
    with pytest.raises(GreenpipeError, match="does not start with the aggregate 'cpu' line"):
        sampler.stop()


def test_a_failing_callback_is_raised_by_stop():
    def checkpoint(samples):
        raise OSError("disk full")

    sampler = Sampler(EstimateMeter(), hz=100).on_window(checkpoint, window_s=0.02).start()
    time.sleep(0.1)
    with pytest.raises(OSError, match="disk full"):
        sampler.stop()


def test_misuse():
    with pytest.raises(GreenpipeError, match="hz must be > 0"):
        Sampler(EstimateMeter(), hz=0)
    sampler = Sampler(EstimateMeter(), hz=10)
    with pytest.raises(GreenpipeError, match="before start"):
        sampler.stop()
    sampler.start()
    with pytest.raises(GreenpipeError, match="before start"):
        sampler.on_window(print, 1.0)
    sampler.stop()
