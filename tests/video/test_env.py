"""TensorFlow's kernels and threads are declared inputs: set from params, listed as DVC params of the stages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from greenpipe.errors import GreenpipeError
from greenpipe.video.env import configure_tensorflow

ROOT = Path(__file__).resolve().parents[2]


def test_the_stage_sets_onednn_from_params_whatever_the_shell_says():
    code = ("import os; from greenpipe.video.env import configure_tensorflow; "
            "print(configure_tensorflow(2, onednn=False), os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == (
        "{'TF_ENABLE_ONEDNN_OPTS': '0', 'intra_op_threads': 2, 'inter_op_threads': 1} 0")


def test_tensorflow_already_imported_with_the_other_setting_is_refused():
    # The video tests' fixture imported TensorFlow with base.tf_onednn's default (off).
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0" and "tensorflow" in sys.modules
    with pytest.raises(GreenpipeError, match=r"imported with TF_ENABLE_ONEDNN_OPTS=0 .* base.tf_onednn = true"):
        configure_tensorflow(1, onednn=True)
    assert configure_tensorflow(1, onednn=False)["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_every_tensorflow_stage_declares_the_setting_and_the_threads():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("video_train", "video_calib", "video_quantize", "video_eval"):
        stage = stages[name].get("do", stages[name])
        assert {"base.tf_onednn", "base.threads"} <= set(stage["params"]), name
    for name in ("calib_dump", "train", "compile", "deploy", "soak"):  # torch / ONNX Runtime threads
        stage = stages[name].get("do", stages[name])
        assert "base.threads" in stage["params"] or "base" in stage["params"], name
