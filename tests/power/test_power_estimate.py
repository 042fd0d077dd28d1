import os
import time

import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.power.estimate import ESTIMATE_LABEL, EstimateMeter, read_cpu_ticks, read_process_ticks


def test_reads_proc_stat_and_process_stat(proc_tree):
    busy, total = read_cpu_ticks(proc_tree.root)
    assert total == 1000 + 10 + 500 + 50000 + 100 + 0 + 20 + 0  # guest columns are not added again
    assert busy == total - 50000 - 100
    assert read_process_ticks(proc_tree.PID, proc_tree.root) == 400  # comm "(py (worker) x)" parsed


def test_zero_utilisation_is_idle_and_full_is_tdp(proc_tree):
    meter = EstimateMeter(tdp_w=100, idle_w=20, proc_root=proc_tree.root)
    proc_tree.add(idle=200)
    assert meter.sample().watts == pytest.approx(20.0)
    proc_tree.add(user=150, system=50)
    assert meter.sample().watts == pytest.approx(100.0)
    proc_tree.add(user=50, idle=30, iowait=20)  # iowait counts as not busy
    assert meter.sample().watts == pytest.approx(60.0)
    assert meter.cpu_share == pytest.approx(0.5)


def test_no_tick_elapsed_keeps_the_last_share_and_energy_integrates(proc_tree):
    meter = EstimateMeter(tdp_w=100, idle_w=20, proc_root=proc_tree.root)
    assert meter.sample().watts is None  # nothing known yet
    proc_tree.add(user=100, idle=100)
    first = meter.sample()
    time.sleep(0.02)
    second = meter.sample()  # counters unchanged
    assert first.watts == second.watts == pytest.approx(60.0)
    assert second.energy_j - first.energy_j == pytest.approx(60.0 * (second.t - first.t))


def test_process_share(proc_tree):
    meter = EstimateMeter(tdp_w=100, idle_w=0, pid=proc_tree.PID, proc_root=proc_tree.root)
    proc_tree.add(user=100, idle=300, proc_user=100)  # the process used 1/4 of all CPU time
    assert meter.sample().watts == pytest.approx(25.0)
    assert "process 4242's CPU share" in meter.describe().what
    (proc_tree.root / str(proc_tree.PID) / "stat").unlink()  # the process ended
    assert meter.sample().watts is None


def test_busy_loop_raises_the_estimate_of_this_process():
    meter = EstimateMeter(tdp_w=100, idle_w=10, pid=os.getpid())
    time.sleep(0.3)
    resting = meter.sample()
    end = time.process_time() + 0.3  # CPU time, so a machine busy with other work still gets 0.3 s of ours
    while time.process_time() < end:
        pass
    busy = meter.sample()
    cores = os.cpu_count() or 1
    # one busy thread is 1/cores of the machine (less if others compete for the cores)
    assert busy.watts - resting.watts > 0.25 * 90 / cores
    assert busy.energy_j > resting.energy_j


def test_label_says_it_is_an_estimate_with_assumptions():
    info = EstimateMeter(cores=8).describe()
    assert info.what.startswith(ESTIMATE_LABEL)
    assert ESTIMATE_LABEL == "ESTIMATE (CPU utilisation x TDP share), not a measurement"
    assert info.measured is False and info.scope == "estimate"
    assert "TDP 120 W (ASSUMED 15 W/core x 8 cores)" in info.what
    assert "idle 12 W (ASSUMED 10% of TDP)" in info.what
    given = EstimateMeter(tdp_w=65, idle_w=8).describe().what
    assert "ASSUMED" not in given and "TDP 65 W (given)" in given


def test_bad_parameters_and_missing_process(proc_tree):
    with pytest.raises(GreenpipeError, match="idle_w <= tdp_w"):
        EstimateMeter(tdp_w=10, idle_w=20)
    with pytest.raises(GreenpipeError, match="cannot read CPU time of process 999999"):
        EstimateMeter(pid=999999, proc_root=proc_tree.root)


@pytest.mark.parametrize("text, cause", [("", "read empty"), ("\n", "read empty"),
                                         ("cpu  1000 10\n", "truncated"), ("cpu  1000 10 50", "truncated"),
                                         ("cpu  1000 1x 500 50000\n", "truncated")])
def test_an_empty_or_truncated_proc_stat_names_the_file_and_the_fix(proc_tree, text, cause):
    (proc_tree.root / "stat").write_text(text)
    with pytest.raises(GreenpipeError, match=cause) as err:
        read_cpu_ticks(proc_tree.root)
    assert str(proc_tree.root / "stat") in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(GreenpipeError, match=cause):  # the meter says the same, not an IndexError
        EstimateMeter(proc_root=proc_tree.root)
    (proc_tree.root / "stat").write_text("cpu  1000 10 500 50000\n")  # a kernel with only 4 columns
    assert read_cpu_ticks(proc_tree.root) == (1510, 51510)


def test_a_truncated_process_stat_names_the_file(proc_tree):
    (proc_tree.root / str(proc_tree.PID) / "stat").write_text(f"{proc_tree.PID} (py) S 1 1")
    with pytest.raises(GreenpipeError, match="empty or truncated") as err:
        read_process_ticks(proc_tree.PID, proc_tree.root)
    assert str(proc_tree.root / str(proc_tree.PID) / "stat") in str(err.value)
