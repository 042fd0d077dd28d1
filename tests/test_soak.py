"""Stage soak end to end on a tiny compiled artifact, on the local device with the estimate meter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from greenpipe.errors import GreenpipeError
from greenpipe.io import read_json
from greenpipe.params import DeviceParams
from greenpipe.power.estimate import ESTIMATE_LABEL
from greenpipe.store import ArtifactStore
from greenpipe.soak import SERIES_FILE, soak_stage
from tests.stage_fixtures import compiled_ptq8, ROOT, stage_params, tiny_params

SOAK = {"idle_s": 0.3, "warmup_s": 0.5, "duration_s": 1.5, "window_s": 0.5, "sample_hz": 20,
        "overhead_pairs": 2, "overhead_block_s": 0.2}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compiled_ptq8(tmp_path_factory.mktemp("ws"))


def test_soak_local_estimate_end_to_end(compiled, tmp_path):
    params = stage_params(soak=SOAK)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    m = soak_stage(params, "ptq8", "local", compiled.root / "compiled", ckpt, out)

    assert m["partial"] is False and m["resumed"] is False
    assert m["windows_done"] == m["windows_planned"] == 3
    assert m["fps"] > 0 and m["inferences"] > 0 and m["measured_s"] == pytest.approx(1.5, abs=0.3)
    assert m["fps_window_min"] <= m["fps_window_mean"] and m["fps_window_std"] >= 0
    # power and performance from the same windows: energy = mean W x measured s
    assert m["avg_w"] > 0 and m["max_w"] >= m["avg_w"] and m["idle_w"] > 0
    assert m["energy_j"] == pytest.approx(m["avg_w"] * m["measured_s"])
    assert m["mj_per_inference"] == pytest.approx(m["energy_j"] / m["inferences"] * 1e3)
    assert m["inferences_per_j"] == pytest.approx(1e3 / m["mj_per_inference"])
    assert m["dynamic_w"] == pytest.approx(m["avg_w"] - m["idle_w"])
    assert 0 < m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"]
    # the estimate is labelled as such wherever its numbers go
    assert m["meter"]["name"] == "estimate" and m["meter"]["measured"] is False and m["power_measured"] is False
    assert m["power_source"].startswith(ESTIMATE_LABEL) and ESTIMATE_LABEL in m["source"]
    assert "same monotonic clock" in m["clock"]
    assert m["input_shape"] == [1, 3, 32, 32] and m["device"]["runtime"] == "ort"
    overhead = m["sampler_overhead"]
    assert overhead["pairs"] == 2 and isinstance(overhead["change"], float) and overhead["fps_with_sampler"] > 0
    # the series moved into the output; the checkpoint is gone
    lines = [json.loads(x) for x in (out / SERIES_FILE).read_text().splitlines()]
    assert lines[0]["kind"] == "header" and not ckpt.exists()
    phases = [r["phase"] for r in lines if r["kind"] == "window"]
    assert phases.count("measure") == 3 and phases[0] == "warmup"
    assert [t["phase"] for t in m["timeline"]] == phases
    assert read_json(out / "soak.json")["fps"] == m["fps"]


def test_remote_device_without_pool_or_queue_is_refused_with_the_fix():
    """A remote soak goes through the farm (tests/farm/test_remote_soak.py); a device that names no pool or
    queue cannot be reached, and params validation says so before any stage runs."""
    with pytest.raises(GreenpipeError) as err:
        stage_params(deploy={"devices": {
            "local": DeviceParams().model_dump(),
            "vck-lab": {"kind": "vck5000", "host": "vck-lab.example", "runtime": "vart", "meter": "xbutil"}}})
    msg = str(err.value)
    assert "deploy.devices.vck-lab" in msg and "pool and queue must name the Prefect work pool" in msg
    assert "host: local" in msg


def test_device_meter_is_validated_against_the_registry():
    with pytest.raises(GreenpipeError, match=r"deploy\.devices\.local\.meter = 'watts'"):
        stage_params(deploy={"devices": {"local": {"meter": "watts"}}})
    assert stage_params(deploy={"devices": {"local": {"meter": "auto"}}}).deploy.devices["local"].meter == "auto"


def test_soak_puts_windows_in_the_result_store(compiled, tmp_path, local_s3, monkeypatch):
    endpoint, bucket = local_s3
    for k, v in endpoint.env().items():
        monkeypatch.setenv(k, v)
    params = stage_params(soak={**SOAK, "overhead_pairs": 0, "store": {"bucket": bucket, "prefix": "soaktest",
                                                                        "endpoint": endpoint.url}})
    m = soak_stage(params, "ptq8", "local", compiled.root / "compiled", tmp_path / "c", tmp_path / "o")
    assert m["store"]["errors"] == 0 and m["store"]["put"] >= 3 + 2  # header, idle, windows...
    store = ArtifactStore.from_endpoint(endpoint, bucket, prefix="soaktest")
    keys = store.list(f"results/{m['store']['run_id']}/")
    windows = [store.get_json(k) for k in keys if k.endswith("-window.json")]
    assert sum(w["phase"] == "measure" for w in windows) == 3
    assert store.get_json(keys[-1])["mj_per_inference"] == m["mj_per_inference"]


def _soak_cmd(compiled, tmp_path, *extra):
    return [sys.executable, "-m", "tasks.soak", "--variant", "ptq8", "--device", "local",
            "--compiled", str(compiled.root / "compiled"), "--checkpoint", str(tmp_path / "ckpt"),
            "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "metrics.json"),
            "--params", str(tmp_path / "params.yaml"), *extra]


def test_killed_soak_resumes_and_partial_report_is_marked(compiled, tmp_path):
    raw = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["soak"] = {**SOAK, "duration_s": 5.0, "window_s": 1.0, "overhead_pairs": 0}
    raw["deploy"]["devices"]["local"]["meter_options"] = {"pid": "self"}  # a new pid must still resume
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    series = tmp_path / "ckpt" / SERIES_FILE

    def measured() -> int:
        if not series.exists():
            return 0
        return sum('"phase":"measure"' in line for line in series.read_text().splitlines())

    proc = subprocess.Popen(_soak_cmd(compiled, tmp_path), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while measured() < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert measured() in (2, 3)  # killed after the 2nd window closed (the 3rd may have closed meanwhile)
    kept = measured()

    partial = subprocess.run(_soak_cmd(compiled, tmp_path, "--report-partial"), cwd=ROOT, capture_output=True,
                             text=True, check=False)
    assert partial.returncode == 0, partial.stderr
    p = read_json(tmp_path / "metrics.json")
    assert p["partial"] is True and p["windows_done"] == kept and p["windows_planned"] == 5
    assert p["power_measured"] is False and p["fps"] > 0 and "process " in p["meter"]["what"]

    done = subprocess.run(_soak_cmd(compiled, tmp_path), cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    m = read_json(tmp_path / "metrics.json")
    assert m["partial"] is False and m["resumed"] is True and m["windows_done"] == 5
    assert len(m["resumes"]) == 1 and m["resumes"][0]["after_window"] == kept and m["resumes"][0]["gap_s"] > 0
    indices = [t["index"] for t in m["timeline"] if t["phase"] == "measure"]
    assert indices == [0, 1, 2, 3, 4]
    assert not (tmp_path / "ckpt").exists() and (tmp_path / "out" / SERIES_FILE).exists()


# -- the report: table, plot, savings projection ---------------------------------------------------

def _row(variant, device, fps, avg_w, idle_w, meter="nvml", scope="card", measured=True, partial=False):
    from greenpipe.report.power import SoakRow

    return SoakRow(variant, device, fps, 0.1, avg_w, avg_w + 5, idle_w, avg_w - idle_w, avg_w / fps * 1e3,
                   fps / avg_w, meter, scope, measured, f"{meter} board power" if measured else ESTIMATE_LABEL,
                   partial)


def test_savings_computed_for_two_measured_same_scope_results():
    from greenpipe.report.power import savings

    fpga = _row("ptq8", "vck5000", fps=200.0, avg_w=60.0, idle_w=30.0, meter="xbutil")
    gpu = _row("fp32", "rtx3090", fps=100.0, avg_w=300.0, idle_w=100.0)
    s = savings(fpga, gpu)
    assert s.refused is None and s.throughput_fps == 100.0  # the slower one's throughput
    # the FPGA at half its soak load: 30 + (60 - 30) x 100 / 200 = 45 W; the GPU at full load 300 W
    assert s.watts_a == pytest.approx(45.0) and s.watts_b == pytest.approx(300.0)
    assert s.kwh["day"] == pytest.approx(255 * 24 / 1000)
    assert s.kwh["week"] == pytest.approx(255 * 24 * 7 / 1000)
    assert s.kwh["year"] == pytest.approx(255 * 24 * 365 / 1000)
    assert savings(gpu, fpga).kwh["year"] == pytest.approx(-s.kwh["year"])  # b over a: negative
    assert savings(fpga, gpu, throughput_fps=150.0).refused  # more than the GPU sustained


def test_savings_refused_for_estimates_other_scopes_and_partial_soaks():
    from greenpipe.report.power import savings

    est_a = _row("ptq8", "local", 80.0, 20.0, 3.0, meter="estimate", scope="estimate", measured=False)
    est_b = _row("fp32", "local", 25.0, 28.0, 3.0, meter="estimate", scope="estimate", measured=False)
    s = savings(est_a, est_b)
    assert s.refused and not s.kwh
    assert "ptq8@local was not measured" in s.refused and "fp32@local was not measured" in s.refused
    assert ESTIMATE_LABEL in s.refused
    card = _row("fp32", "rtx3090", 100.0, 300.0, 100.0)
    wall = _row("ptq8", "vck5000", 200.0, 120.0, 80.0, meter="wallmeter", scope="system")
    assert "measure different things" in savings(wall, card).refused
    assert "partial soak" in savings(card, _row("ptq8", "a100", 90.0, 250.0, 50.0, partial=True)).refused


def test_report_carries_the_soak_section_plot_and_refusal(tmp_path):
    from greenpipe.io import write_json
    from greenpipe.params import parse_params
    from tasks.report import report

    metrics = tmp_path / "metrics"
    write_json(metrics / "deploy" / "ptq8-local.json", {"psnr": 31.0, "ssim": 0.9, "p90_ms": 5.0, "fps": 100.0,
                                                        "source": "measured on local CPU"})
    timeline = [{"phase": p, "index": i, "t_wall_start": 1e9 + k, "seconds": 1.0, "fps": 90.0 + k,
                 "avg_w": 20.0 + k, "max_w": 22.0 + k} for k, (p, i) in enumerate([("warmup", 0), ("measure", 0),
                                                                                   ("measure", 1)])]
    meter = {"name": "estimate", "scope": "estimate", "what": ESTIMATE_LABEL + ": test", "measured": False}
    for variant, fps in (("fp32", 30.0), ("ptq8", 95.0)):
        write_json(metrics / "soak" / f"{variant}-local.json", {
            "variant": variant, "device_name": "local", "fps": fps, "fps_window_std": 1.0, "avg_w": 21.0,
            "max_w": 23.0, "idle_w": 3.0, "dynamic_w": 18.0, "mj_per_inference": 21.0 / fps * 1e3,
            "inferences_per_j": fps / 21.0, "meter": meter, "partial": variant == "fp32", "timeline": timeline})
    params = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    result = report(params, metrics, tmp_path / "out")
    md = (tmp_path / "out" / "summary.md").read_text()
    assert result["soak_rows"] == 2 and "## Power soak" in md
    assert "| ptq8 | local | 95.0 | 1.00 | 21.0 (est.) |" in md and "| fp32 | local partial |" in md
    assert md.count("**ESTIMATE**, not a measurement") == 2 and ESTIMATE_LABEL + ": test" in md
    assert "**not computed** for any pair: power of fp32@local, ptq8@local comes from an estimate" in md
    assert md.index("## Power soak") < md.index("Where the figures come from")
    assert (tmp_path / "out" / "soak_timeseries.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_soak_results_is_unchanged(tmp_path):
    from greenpipe.report.power import collect_soak, power_markdown

    assert collect_soak(tmp_path) == [] and power_markdown([]) == ""


def test_wall_meter_figures_are_labelled_imported_not_measured(tmp_path):
    from greenpipe.power import open_meter
    from greenpipe.report.power import power_markdown
    from greenpipe.soak import _meter_fields

    log = tmp_path / "wall.csv"
    log.write_text("timestamp,watts\n1740819600.0,212.5\n1740819605.0,213.1\n")
    fields = _meter_fields(open_meter("wallmeter", log=str(log)), None, None)
    assert fields["power_source"].startswith("imported: whole-system power at the wall socket")
    wall = _row("ptq8", "vck5000", 200.0, 120.0, 80.0, meter="wallmeter", scope="system")
    card = _row("fp32", "rtx3090", 100.0, 300.0, 100.0)
    md = power_markdown([wall, card])
    assert "| wallmeter (system) | imported (the wall meter's own log) |" in md
    assert "| nvml (card) | measured |" in md
    assert "ptq8@vck5000 vs fp32@rtx3090: **not computed**: the meters measure different things" in md
