import time

import pytest

from greenpipe.errors import DataError, GreenpipeError
from greenpipe.power.wallmeter import WallMeterLog, parse_timestamp, read_log

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z, the first row of the wall_log fixture


def test_reads_iso_and_epoch_rows_and_gaps(wall_log):
    assert read_log(wall_log) == [
        (T0, 100.0), (T0 + 1, 100.0), (T0 + 2, 200.0), (T0 + 3, None), (T0 + 10, 300.0), (T0 + 11, 300.0)]


def test_timestamps():
    assert parse_timestamp("2023-11-14T22:13:20Z") == T0
    assert parse_timestamp("2023-11-14 23:13:20+01:00") == T0
    assert parse_timestamp("1700000000.5") == T0 + 0.5
    assert parse_timestamp("2023-11-14T22:13:20", naive_as_utc=True) == T0
    with pytest.raises(ValueError, match="milliseconds"):
        parse_timestamp("1700000000000")


def test_average_over_a_window_with_a_gap_reports_coverage(wall_log):
    log = WallMeterLog(log=wall_log)
    assert log.max_hold_s == 3.0  # 3 x the median 1 s spacing
    avg = log.average_watts(T0, T0 + 12)
    # step-held: 100 [0,1) 100 [1,2) 200 [2,3) N/A [3,10) 300 [10,11) 300 [11,12)
    assert avg.watts == pytest.approx(200.0)
    assert avg.coverage.covered_s == pytest.approx(5.0)
    assert avg.coverage.fraction == pytest.approx(5 / 12)
    assert avg.coverage.largest_gap_s == pytest.approx(7.0)
    with pytest.raises(GreenpipeError, match=r"covers 42% of it \(needs 90%\) and has a 7.0 s gap"):
        avg.require(min_fraction=0.9, max_gap_s=2)


def test_a_reading_holds_only_for_max_hold(wall_log):
    # without the N/A row, 200 W at T0+2 would stand for at most 3 s, not until T0+10
    text = wall_log.read_text().replace("1700000003,N/A\n", "")
    wall_log.write_text(text)
    avg = WallMeterLog(log=wall_log, max_hold_s=3).average_watts(T0 + 2, T0 + 10)
    assert avg.coverage.covered_s == pytest.approx(3.0)
    assert avg.coverage.largest_gap_s == pytest.approx(5.0)
    assert avg.watts == pytest.approx(200.0)


def test_window_is_aligned_by_wall_clock(wall_log):
    log = WallMeterLog(log=wall_log)
    samples = log.window(T0 + 1.5, T0 + 2.5)
    # the reading in force at the window's start comes first, stamped at the start
    assert [(s.t_wall, s.watts) for s in samples] == [(T0 + 1.5, 100.0), (T0 + 2, 200.0)]
    avg = log.average_watts(T0 + 1.5, T0 + 2.5)
    assert avg.watts == pytest.approx(150.0)
    assert avg.coverage.fraction == pytest.approx(1.0) and avg.coverage.largest_gap_s == 0
    assert avg.require(min_fraction=0.99, max_gap_s=0) is avg
    # monotonic stamps keep the wall-clock spacing
    assert samples[1].t - samples[0].t == pytest.approx(0.5)


def test_window_outside_the_log_is_uncovered(wall_log):
    avg = WallMeterLog(log=wall_log).average_watts(T0 + 100, T0 + 160)
    assert avg.watts is None
    assert avg.coverage.fraction == 0 and avg.coverage.largest_gap_s == pytest.approx(60)
    with pytest.raises(GreenpipeError, match="covers 0%"):
        avg.require()


def test_sample_is_the_latest_reading_at_or_before_now_and_follows_a_growing_log(tmp_path):
    now = time.time()
    path = tmp_path / "live.csv"
    path.write_text(f"timestamp,watts\n{now - 20},150\n{now - 10},151\n{now + 3600},999\n")
    log = WallMeterLog(log=path)
    sample = log.sample()
    assert (sample.t_wall, sample.watts) == (now - 10, 151.0)
    with path.open("a") as f:
        f.write(f"{now - 1},152.5\n")
    assert log.sample().watts == 152.5
    info = log.describe()
    assert info.scope == "system" and info.measured and str(path) in info.what


def test_bad_rows_name_the_file_and_line(tmp_path):
    path = tmp_path / "typed.csv"
    path.write_text("timestamp,watts\n1700000000,100\nyesterday,120\n")
    with pytest.raises(DataError, match=r"typed\.csv:3: 'yesterday,120' is not timestamp,watts"):
        WallMeterLog(log=path)
    path.write_text("1700000000,-5\n")
    with pytest.raises(DataError, match="not a power reading"):
        WallMeterLog(log=path)
    with pytest.raises(DataError, match="not found"):
        WallMeterLog(log=tmp_path / "missing.csv")


def test_headerless_log_and_columns_in_another_order(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("1700000000,100\n1700000001,110\n")
    assert read_log(path) == [(T0, 100.0), (T0 + 1, 110.0)]
    path.write_text("watts,timestamp\n100,1700000000\n")
    assert read_log(path) == [(T0, 100.0)]
