"""The TSM kernels on a remote device host, through the same farm as the UNet: deploy and soak.

A per-kernel variant travels as its directory (kernels.json + one TFLite file per kernel) and the val
clips as the files the video recipe's eval reads; the host runs the recipe's host loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from greenpipe.io import read_json
from greenpipe.params import parse_params
from tests.farm.conftest import POOL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tsm(tmp_path_factory):
    """Tiny video data and a 1-step TSM quantized to float TFLite kernels: (params, data dir, variant dir)."""
    import cv2

    from tasks.video_data import video_data
    from tasks.video_quantize import video_quantize
    from tasks.video_train import video_train

    root = tmp_path_factory.mktemp("farm-video")
    rng = np.random.default_rng(0)
    photos = root / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(photos / f"{name}.png"),
                    cv2.GaussianBlur(rng.integers(0, 255, (100, 120, 3), dtype=np.uint8), (0, 0), 2))
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["video"] = {
        "data": {"val_sources": ["c"], "train_clips_per_class": 1, "val_clips_per_class": 1},
        "model": {"width_mult": 0.25, "input_size": 32, "n_frames": 4, "last_channel": 32},
        "train": {"steps": 1, "batch_clips": 2, "eval_every": 1},
        "calib": {"clips": 1},
        "quantize": {"tflite_fp32": {}},
        "eval": {"smooth_window": 3, "fps_frames": 8, "warmup_frames": 2},
    }
    raw["deploy"]["single_stream_s"] = raw["deploy"]["offline_s"] = 0.3
    raw["deploy"]["repeats"] = 2  # medians of 2 runs: enough to exercise the spread, quick on a test host
    raw["deploy"]["devices"] = {
        "local": raw["deploy"]["devices"]["local"],
        "cpu-host-1": {"kind": "cpu", "host": "cpu-host-1", "pool": POOL, "queue": "cpu-host-1", "target": "cpu",
                       "runtime": "ort", "timeout_s": 120, "retries": 0},
    }
    raw["soak"] = {"idle_s": 0.2, "warmup_s": 0.2, "duration_s": 0.6, "window_s": 0.3, "overhead_pairs": 0}
    params = parse_params(raw)
    data = root / "vdata"
    video_data(params, photos, data)
    video_train(params, "tsm", data, root / "models" / "tsm", root / "curve.csv")
    variant = root / "quant" / "tflite_fp32"
    video_quantize(params, "tflite_fp32", root / "models" / "tsm", root / "calib-unused", variant)
    return params, data, variant


def test_the_tsm_kernels_deploy_and_soak_on_a_remote_host_as_they_do_here(farm, tsm, tmp_path):
    from tasks.deploy import deploy_stage
    from tasks.soak import soak_stage

    params, data, variant = tsm
    local = deploy_stage(params, "tflite_fp32", "local", variant, data, tmp_path / "local")
    remote = deploy_stage(params, "tflite_fp32", "cpu-host-1", variant, data, tmp_path / "remote")
    assert remote["recipe"] == "video" and remote["quality"]["primary"] == "top1"
    assert remote["top1"] == local["top1"] and remote["samples"] == local["samples"] == 7
    rows_remote = read_json(tmp_path / "remote" / "eval.json")["per_sample"]
    rows_local = read_json(tmp_path / "local" / "eval.json")["per_sample"]
    assert [(r["name"], r["pred"]) for r in rows_remote] == [(r["name"], r["pred"]) for r in rows_local]
    assert remote["source"].startswith("measured on cpu-host-1 (") and "11 kernels + 10 CPU shifts" in remote["source"]
    assert remote["device"]["host_facts"]["name"] == "cpu-host-1"

    soaked = soak_stage(params, "tflite_fp32", "cpu-host-1", variant, tmp_path / "ckpt", tmp_path / "soak")
    assert soaked["recipe"] == "video" and soaked["windows_done"] == 2 and soaked["fps"] > 0
    assert soaked["host"]["name"] == "cpu-host-1"
