"""Stage deploy end to end on a tiny workspace: quantize -> compile -> deploy on the local device."""

from __future__ import annotations

import numpy as np
import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.io import read_image, read_json
from greenpipe.params import DeviceParams
from tasks.deploy import deploy_stage
from tests.stage_fixtures import compiled_ptq8, stage_params


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compiled_ptq8(tmp_path_factory.mktemp("ws"))


def test_deploy_local_evaluates_the_artifact_and_benchmarks_it(compiled, tmp_path):
    ws = compiled
    metrics = deploy_stage(ws.params, "ptq8", "local", ws.root / "compiled", ws.data, tmp_path)

    compile_report = read_json(ws.root / "compiled" / "cpu" / "compile_report.json")
    # the deployed artifact is what the compile stage checked: same val scores
    assert metrics["psnr"] == pytest.approx(compile_report["val_quality"]["psnr"])
    assert metrics["ssim"] == pytest.approx(compile_report["val_quality"]["ssim"])
    assert metrics["samples"] == 2 and np.isfinite(metrics["noisy_psnr"])
    assert 0 < metrics["p50_ms"] <= metrics["p90_ms"] <= metrics["p99_ms"]
    # The tiny params' LoadGen runs last well under the rules' 600 s: never reported VALID.
    assert metrics["fps"] > 0 and metrics["loadgen_valid"] is False
    assert metrics["loadgen_own_validity"] == {"SingleStream": "VALID", "Offline": "VALID"}
    for scenario, verdict in metrics["loadgen_validity"].items():
        n = metrics["loadgen_duration_s"][scenario]
        assert n < 600 and verdict == f"non-compliant (duration {n:.3g} s < 600 s)"
    assert metrics["input_shape"] == [1, 3, 32, 32] and metrics["model_mb"] > 0
    # counted from the deployed graph at the query's shape: the same count as at that shape directly
    from greenpipe.bench.macs import onnx_macs

    assert metrics["gmacs"] == onnx_macs(ws.root / "compiled" / "cpu" / "model.onnx", (1, 3, 32, 32)) / 1e9 > 0
    assert "counted from the artifact's ONNX graph at 1x3x32x32" in metrics["gmacs_source"]
    assert metrics["device"]["runtime"] == "ort" and metrics["device"]["threads"] == ws.params.base.threads
    assert metrics["source"].startswith("measured on local CPU (") and "ONNX Runtime" in metrics["source"]
    assert metrics["device_name"] == "local" and metrics["variant"] == "ptq8" and metrics["target"] == "cpu"

    rows = read_json(tmp_path / "eval.json")["per_sample"]
    assert sorted(r["name"] for r in rows) == ["img3", "img4"]
    # The tiny params' 2 repeats of each scenario: medians with their min - max, and every run's logs.
    assert metrics["repeats"] == 2
    for figure in ("p90_ms", "fps"):
        lo, hi = metrics["spread"][figure]
        assert lo <= metrics[figure] <= hi
    for scenario in ("SingleStream", "Offline"):
        for i in range(2):
            summary = (tmp_path / "loadgen" / f"repeat-{i}" / scenario / "mlperf_log_summary.txt").read_text()
            assert f"Scenario : {scenario}" in summary
    bench = read_json(tmp_path / "bench.json")
    assert bench["single_stream"]["settings"]["min_duration_ms"] == 300
    samples = sorted((tmp_path / "samples").glob("*.png"))
    assert 1 <= len(samples) <= 3 and read_image(samples[0]).shape == (48, 48, 3)


def test_deploy_also_measures_the_self_ensemble_of_the_same_artifact(compiled, tmp_path):
    ws = compiled
    params = stage_params(deploy={"self_ensemble": 4, "self_ensemble_repeats": 3})
    metrics = deploy_stage(params, "ptq8", "local", ws.root / "compiled", ws.data, tmp_path)

    ens = metrics["self_ensemble"]
    assert ens["passes"] == 4 and ens["samples"] == 2 and np.isfinite(ens["psnr"]) and 0 < ens["ssim"] <= 1
    assert ens["psnr"] != metrics["psnr"]  # four different passes averaged, not the single pass again
    assert 0 < ens["p50_ms"] <= ens["p90_ms"] <= ens["p99_ms"]
    assert ens["fps"] is None and list(ens["loadgen_validity"]) == ["SingleStream"]  # no Offline run
    assert ens["source"].startswith("measured on local CPU (") and ens["source"].endswith(", x4 self-ensemble")
    assert "self-ensemble" not in metrics["source"]
    evaluation = read_json(tmp_path / "eval.json")
    assert evaluation["self_ensemble"]["summary"]["psnr"] == ens["psnr"]
    assert sorted(r["name"] for r in evaluation["self_ensemble"]["per_sample"]) == ["img3", "img4"]
    assert read_json(tmp_path / "bench.json")["self_ensemble"]["p90_ms"] == ens["p90_ms"]
    assert (tmp_path / "loadgen-x4" / "repeat-1" / "SingleStream" / "mlperf_log_summary.txt").exists()
    assert not list((tmp_path / "loadgen-x4").glob("*/Offline"))
    assert ens["repeats"] == 3 and metrics["repeats"] == 2  # deploy.self_ensemble_repeats, apart from deploy.repeats


def test_self_ensemble_off_measures_the_single_pass_only(compiled, tmp_path):
    ws = compiled
    params = stage_params(deploy={"self_ensemble": 1})
    metrics = deploy_stage(params, "ptq8", "local", ws.root / "compiled", ws.data, tmp_path)
    assert "self_ensemble" not in metrics and "self_ensemble" not in read_json(tmp_path / "eval.json")
    assert not list(tmp_path.glob("loadgen-x*"))


def test_unknown_device_is_a_user_error(compiled, tmp_path):
    ws = compiled
    params = stage_params()
    with pytest.raises(GreenpipeError, match="--device gpu0: not in deploy.devices"):
        deploy_stage(params, "ptq8", "gpu0", ws.root / "compiled", ws.data, tmp_path)


def test_only_the_listed_variants_get_the_self_ensemble_rows(tmp_path):
    from greenpipe.deploy import deploy_job

    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"x" * 10)
    compiled = {"recipe": "denoise", "model_args": {"in_channels": 3, "width": 4, "depth": 2}, "multiple": 4}
    params = stage_params(deploy={"self_ensemble": 8, "self_ensemble_variants": ["fp32"]})
    assert deploy_job(params, "fp32", "local", compiled, artifact).self_ensemble == 8
    assert deploy_job(params, "ptq8", "local", compiled, artifact).self_ensemble == 1
    every = stage_params(deploy={"self_ensemble": 8, "self_ensemble_variants": []})
    assert deploy_job(every, "ptq8", "local", compiled, artifact).self_ensemble == 8


def test_a_device_can_select_the_openvino_runtime(compiled, tmp_path):
    ws = compiled
    device = {"kind": "cpu", "host": "local", "target": "cpu", "runtime": "openvino", "batch": 2}
    params = stage_params(deploy={"devices": {"ov": device}})
    metrics = deploy_stage(params, "ptq8", "ov", ws.root / "compiled", ws.data, tmp_path)
    assert metrics["device"]["runtime"] == "openvino" and metrics["device"]["batch"] == 2
    assert "OpenVINO" in metrics["source"] and metrics["fps"] > 0
    # The same artifact as ORT's, up to OpenVINO's one-LSB int8 rounding: the val score barely moves.
    compile_report = read_json(ws.root / "compiled" / "cpu" / "compile_report.json")
    # (the tiny untrained fixture's output LSB is 2**-6; here about 0.08 dB of the untrained model's ~12.6)
    assert metrics["psnr"] == pytest.approx(compile_report["val_quality"]["psnr"], abs=0.15)
