"""The video stages end to end on tiny params: data -> train (tsm, tsn) -> calib -> quantize -> eval."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from greenpipe.params import parse_params


def test_importing_the_recipe_and_registries_does_not_load_tensorflow():
    code = ("import sys, greenpipe.recipes, greenpipe.runtime, greenpipe.quant, tasks.video_eval; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_video_params_name_the_key():
    from greenpipe.errors import ParamsError

    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["video"]["model"]["width_mult"] = 0
    with pytest.raises(ParamsError, match="video.model.width_mult"):
        parse_params(raw)


def test_bad_motion_range_names_the_key():
    from greenpipe.errors import ParamsError

    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["video"]["data"]["pan_per_frame"] = [0.3, 0.2]
    with pytest.raises(ParamsError, match="pan_per_frame"):
        parse_params(raw)


@pytest.mark.slow
def test_video_stages_end_to_end(tmp_path):
    import cv2

    from greenpipe.io import write_json
    from tasks.calib_dump import calib_dump
    from tasks.video_data import video_data
    from greenpipe.video.eval import video_eval
    from tasks.video_quantize import video_quantize
    from tasks.video_train import video_train

    rng = np.random.default_rng(0)
    photos = tmp_path / "data" / "clean"
    photos.mkdir(parents=True)
    for name in ("a", "b", "c"):
        cv2.imwrite(str(photos / f"{name}.png"),
                    cv2.GaussianBlur(rng.integers(0, 255, (100, 120, 3), dtype=np.uint8), (0, 0), 2))
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["base"]["profile"] = "quick"
    raw["video"] = {
        "data": {"val_sources": ["c"], "train_clips_per_class": 1, "val_clips_per_class": 1},
        "model": {"width_mult": 0.25, "input_size": 32, "n_frames": 4, "last_channel": 32},
        "train": {"steps": 2, "batch_clips": 2, "eval_every": 1},
        "calib": {"clips": 2},
        "quantize": {"tflite_fp32": {}, "tflite_int8": {}},
        # smooth_window = n_frames - 1: the online score covers the frames the float score averages
        "eval": {"smooth_window": 3, "fps_frames": 8, "warmup_frames": 2},
    }
    params = parse_params(raw)
    data, models, metrics = tmp_path / "vdata", tmp_path / "models", tmp_path / "metrics"
    assert video_data(params, photos, data)["val_clips"] == 7
    for net in ("tsm", "tsn"):
        m = video_train(params, net, data, models / net, metrics / f"train_{net}_curve.csv")
        write_json(metrics / f"train_{net}.json", m)
        assert 0 <= m["val_top1"] <= 100 and (models / net / "checkpoint.npz").exists()
    # Deterministic under base.seed, initial weights included: a second run writes the same weights.
    video_train(params, "tsm", data, models / "tsm_again", metrics / "again.csv")
    with np.load(models / "tsm" / "checkpoint.npz") as a, np.load(models / "tsm_again" / "checkpoint.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__header__")
    calib = calib_dump(params, "video", data, models / "tsm", tmp_path / "calib")
    assert calib["boundaries"] == 21 and calib["samples_per_boundary"] == 2 * 4
    for variant in ("tflite_fp32", "tflite_int8"):
        assert video_quantize(params, variant, models / "tsm", tmp_path / "calib", tmp_path / "quant" / variant)[
            "kernels"] == 11
    result = video_eval(params, data, tmp_path / "quant", metrics)
    for variant in ("tflite_fp32", "tflite_int8"):
        r = result["variants"][variant]
        assert r["clips"] == 7 and len(r["kernel_ms"]) == 11 and len(r["shift_ms"]) == 10
        assert r["fps"] > 0 and r["sustained_fps"] > 0 and "measured on local CPU" in r["source"]
    # The float TFLite kernels reproduce the float Keras network's val top-1 (same clips, same smoothing).
    assert result["variants"]["tflite_fp32"]["top1"] == pytest.approx(result["tsm_float_top1"])
    assert "int8_minus_float_points" in result
    # The same kernels through the shared device path: deploy (eval + LoadGen), soak, report, nightly rows.
    from greenpipe.nightly.results import collect_rows
    from tasks.deploy import deploy_stage
    from tasks.report import report
    from tasks.soak import soak_stage

    raw["deploy"]["single_stream_s"] = raw["deploy"]["offline_s"] = 0.3
    raw["deploy"]["repeats"] = 2  # medians of 2 runs: enough to exercise the spread, quick on a test host
    raw["soak"] = {"idle_s": 0.2, "warmup_s": 0.2, "duration_s": 0.6, "window_s": 0.3, "overhead_pairs": 0}
    params = parse_params(raw)
    for variant in ("tflite_fp32", "tflite_int8"):
        d = deploy_stage(params, variant, "local", tmp_path / "quant" / variant, data,
                         tmp_path / "deploy" / variant)
        assert d["recipe"] == "video" and d["quality"]["primary"] == "top1" and d["samples"] == 7
        assert d["input_shape"] == [1, 32, 32, 3] and "self_ensemble" not in d  # flips change a gesture
        assert d["top1"] == pytest.approx(result["variants"][variant]["top1"])  # the same host loop, same clips
        assert "11 kernels + 10 CPU shifts" in d["source"]
        write_json(metrics / "video" / "deploy" / f"{variant}-local.json", d)
        s = soak_stage(params, variant, "local", tmp_path / "quant" / variant, tmp_path / "ckpt" / variant,
                       tmp_path / "soak" / variant)
        assert s["recipe"] == "video" and s["windows_done"] == 2 and s["fps"] > 0
        write_json(metrics / "video" / "soak" / f"{variant}-local.json", s)
    for variant in ("tflite_fp32", "tflite_int8"):
        write_json(metrics / "video" / "quantize" / f"{variant}.json",
                   video_quantize(params, variant, models / "tsm", tmp_path / "calib", tmp_path / "q2" / variant))
    out = report(params, metrics, tmp_path / "report")
    assert out["recipes"] == ["denoise", "video"]  # base.recipe first, even with no rows of its own
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "## Recipe `video`" in md and "| tflite_int8 | local |" in md and "top-1 %" in md
    assert (tmp_path / "report" / "pareto_video.png").exists()
    rows = collect_rows(metrics)
    assert rows["tflite_int8-local"]["quality_metric"] == "top1" and "mj_per_inference" in rows["tflite_int8-local"]
