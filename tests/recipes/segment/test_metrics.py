"""The segment recipe's scores: IoU per class, mIoU and pixel accuracy, label 255 ignored."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from greenpipe.recipes import get_recipe
from greenpipe.recipes.segment import scores
from greenpipe.recipes.segment.data import IGNORE, split_samples
from greenpipe.recipes.segment.ingest import ingest
from tests.recipes.segment.fixtures import segment_params
from tests.recipes.segment.test_data import photos  # noqa: F401  (fixture)


def test_scores_of_a_known_confusion_matrix():
    # true 0: 3 right, 1 as class 1; true 1: 2 right; class 2 never labelled nor predicted
    found = scores(np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]]))
    assert found["per_class_iou"][0] == pytest.approx(3 / 4) and found["per_class_iou"][1] == pytest.approx(2 / 3)
    assert math.isnan(found["per_class_iou"][2])
    assert found["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2) and found["pixel_acc"] == pytest.approx(5 / 6)


@pytest.fixture(scope="module")
def prepared(photos, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("seg") / "prepared"
    ingest(segment_params(), {"photos": photos, "out": out})
    return out


def _oracle(prepared: Path, wrong: int = 0):
    """A runner that returns one-hot logits of the true labels (class ``wrong`` where the label is 255)."""
    labels = [s.load()[1] for s in split_samples(prepared, "val")]
    calls = iter(labels)

    def run(x: np.ndarray) -> np.ndarray:
        label = next(calls)
        logits = np.zeros((1, 9, *x.shape[2:]), np.float32)
        h, w = label.shape
        target = np.where(label == IGNORE, wrong, label)
        logits[0, target, np.arange(h)[:, None], np.arange(w)] = 1.0
        return logits

    return run, labels


def test_a_perfect_model_scores_one_whatever_it_says_on_ignored_pixels(prepared):
    run, _ = _oracle(prepared, wrong=3)
    outputs = {}
    evaluation = get_recipe("segment").evaluate(run, prepared, outputs=outputs)
    assert evaluation.quality.primary == "miou" and evaluation.quality.higher_is_better
    assert evaluation.quality.value == pytest.approx(1.0) and evaluation.quality.values["pixel_acc"] == 1.0
    assert set(outputs) == {s.name for s in split_samples(prepared, "val")}
    assert next(iter(outputs.values())).shape[0] == 9  # class probabilities


def test_a_constant_prediction_scores_the_share_of_its_class(prepared):
    labels = [s.load()[1] for s in split_samples(prepared, "val")]
    road = sum(int((lab == 0).sum()) for lab in labels)
    labelled = sum(int((lab != IGNORE).sum()) for lab in labels)

    def run(x: np.ndarray) -> np.ndarray:
        out = np.zeros((1, 9, *x.shape[2:]), np.float32)
        out[:, 0] = 1.0
        return out

    evaluation = get_recipe("segment").evaluate(run, prepared)
    assert evaluation.quality.values["pixel_acc"] == pytest.approx(road / labelled)
    iou = evaluation.extra["per_class_iou"]
    assert iou["road"] == pytest.approx(road / labelled)
    # every other class that appears scores 0; one that appears nowhere and is never predicted is None
    present = {c for c, v in iou.items() if v is not None}
    assert evaluation.quality.value == pytest.approx(iou["road"] / len(present))


def test_a_network_run_at_another_scale_is_scored_at_the_labels_resolution():
    from greenpipe.recipes.segment.evaluate import at_scale

    seen = []

    def run(x):  # logits = the image's own channels (3 classes), recording the size the "network" saw
        seen.append(x.shape)
        return x.copy()

    yy, xx = np.mgrid[0:32, 0:64] / 64.0
    image = np.stack([np.sin(3 * xx), np.cos(4 * yy), xx * yy])[None].astype(np.float32)  # (1, 3, 32, 64), smooth
    np.testing.assert_array_equal(at_scale(run, (32, 64))(image), image)  # its own size: unchanged
    out = at_scale(run, (128, 256))(image)
    assert seen[-1] == (1, 3, 128, 256) and out.shape == image.shape
    assert (out.argmax(1) == image.argmax(1)).mean() > 0.97 and np.abs(out - image).max() < 0.05


def test_the_latency_at_a_scale_times_the_artifact_alone_once_per_image():
    import time

    from greenpipe.recipes.segment.evaluate import at_scale

    def run(x):  # a 'network' that takes 20 ms
        time.sleep(0.02)
        return x.copy()

    times: list[float] = []
    scaled = at_scale(run, (512, 1024), times)
    image = np.zeros((1, 3, 32, 64), np.float32)
    for _ in range(3):
        scaled(image)
    assert len(times) == 3 and all(20 <= t < 200 for t in times)
