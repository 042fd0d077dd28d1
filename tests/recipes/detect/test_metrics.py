"""mAP as pycocotools computes it, and the recipe's evaluate over real files, PyTorch and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenpipe.recipes.detect import DETECT, METRICS
from greenpipe.recipes.detect.boxes import match
from greenpipe.recipes.detect.data import load, load_image, normalised
from greenpipe.recipes.detect.metrics import Boxes, coco_map
from greenpipe.recipes.detect.model import SSDConfig, build_ssd
from greenpipe.recipes.detect.training import DetectTraining

from tests.recipes.detect.test_data import write_voc

CLASSES = ("cat", "dog")
SIZES = [(200, 200), (200, 200)]
TRUTH = [Boxes(np.array([[0.0, 0.0, 100.0, 100.0], [120, 120, 180, 190]]), np.array([0, 1])),
         Boxes(np.array([[50.0, 50.0, 150.0, 150.0]]), np.array([0]))]


def shifted(dx: float) -> list[Boxes]:
    return [Boxes(t.boxes + [dx, 0, dx, 0], t.classes, np.ones(len(t.classes))) for t in TRUTH]


def test_perfect_detections_score_one():
    scores = coco_map(TRUTH, shifted(0), CLASSES, SIZES)
    assert scores["map50"] == pytest.approx(1.0) and scores["map50_95"] == pytest.approx(1.0)
    assert scores["ap50"] == pytest.approx({"cat": 1.0, "dog": 1.0})


def test_shifted_boxes_score_lower_as_cocoeval_counts():
    # a 100 px box shifted by 16 px overlaps its truth with IoU 84/116 = 0.72: a hit at the IoU
    # thresholds 0.50 ... 0.70 (5 of 10), a miss at 0.75 ... 0.95; the 60 x 70 dog box shifted by
    # 16 px has IoU 44/76 = 0.58: a hit at 0.50 and 0.55 only
    scores = coco_map(TRUTH, shifted(16), CLASSES, SIZES)
    assert scores["map50"] == pytest.approx(1.0)
    assert scores["map50_95"] == pytest.approx((5 / 10 + 2 / 10) / 2, abs=1e-6)
    # shifted by 40 px: IoU 60/140 = 0.43 for the cats, below 0.5 everywhere
    far = coco_map(TRUTH, shifted(40), CLASSES, SIZES)
    assert far["ap50"]["cat"] == 0.0 and far["map50"] < scores["map50"]


def test_wrong_class_and_no_detections_score_zero():
    wrong = [Boxes(t.boxes, 1 - t.classes, np.ones(len(t.classes))) for t in TRUTH]
    assert coco_map(TRUTH, wrong, CLASSES, SIZES)["map50"] == 0.0
    empty = [Boxes(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)) for _ in TRUTH]
    assert coco_map(TRUTH, empty, CLASSES, SIZES) == {"map50": 0.0, "map50_95": 0.0,
                                                     "ap50": {"cat": 0.0, "dog": 0.0}}


def tiny_voc(root, n=3):
    rng = np.random.default_rng(1)
    for i in range(n):
        objects = [("cat", (8, 8, 40, 36)), ("dog", (30 + i, 20, 60, 46))] if i < n - 1 else []
        write_voc(root, f"img{i}", f"img{i}.{'png' if i % 2 else 'jpg'}", objects)
    return root


def test_evaluate_scores_an_exact_network_one(tmp_path):
    """The network that outputs the matched encoding of the truth: resize, priors, decode, NMS and
    the map back to pixels must lose nothing."""
    data = load(tiny_voc(tmp_path))
    size = 64
    priors = SSDConfig(num_classes=2, input_size=size).priors()
    exact = {}
    for s in data.samples:
        loc, cls = match(normalised(s), data.labels(s), priors)
        logits = np.where(np.arange(3) == cls[:, None], 10.0, 0.0).astype(np.float32)
        exact[load_image(s.image, size).tobytes()] = np.concatenate([loc, logits], 1)[None]
    seen = {}
    ev = DETECT.evaluate(lambda x: exact[x[0].tobytes()], tmp_path, input_size=size, outputs=seen)
    assert ev.quality.primary == "map50" and ev.quality.higher_is_better
    assert ev.quality.value == pytest.approx(1.0, abs=1e-6)
    assert ev.quality.values["map50_95"] > 0.9  # box corners are rounded by float32 only
    assert ev.quality.samples == 3 and [r["objects"] for r in ev.per_sample] == [2, 2, 0]
    assert ev.extra["ap50_per_class"] == pytest.approx({"cat": 1.0, "dog": 1.0})
    # outputs keep each image's raw head outputs (fixed shape: what the compile stage's agreement compares)
    assert all(seen[s.id].shape == (len(priors), 4 + 3) for s in data.samples)


def test_trained_model_scores_the_same_in_pytorch_and_onnx_runtime(tmp_path):
    import onnxruntime as ort

    from greenpipe.quant.export import export_onnx

    data = load(tiny_voc(tmp_path / "voc"))
    cfg = SSDConfig(num_classes=2, backbone="mobilenet", width=4, input_size=32)
    task = DetectTraining(data, cfg, batch_size=2)
    torch.manual_seed(0)
    model = DETECT.build_model(task.model_args)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch = task.batch(rng)
        loss = task.loss(model(batch[0]), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    def torch_run(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    session = ort.InferenceSession(str(export_onnx(model, torch.zeros(1, 3, 32, 32), tmp_path / "onnx")),
                                   providers=["CPUExecutionProvider"])
    a = DETECT.evaluate(torch_run, tmp_path / "voc", input_size=32, score_threshold=0.05)
    b = DETECT.evaluate(lambda x: session.run(None, {"input": x})[0], tmp_path / "voc", input_size=32,
                        score_threshold=0.05)
    assert [m.name for m in METRICS] == list(a.quality.values)
    assert 0.0 <= a.quality.value <= 1.0
    assert a.quality.values == pytest.approx(b.quality.values, abs=1e-4)
    assert [r["detections"] for r in a.per_sample] == [r["detections"] for r in b.per_sample]
