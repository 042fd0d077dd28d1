"""The detect training task: batches whose targets follow their (flipped) images, and its fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from greenpipe.recipes.detect.boxes import decode
from greenpipe.recipes.detect.data import load
from greenpipe.recipes.detect.model import SSDConfig
from greenpipe.recipes.detect.training import DetectTraining, fingerprint

from tests.recipes.detect.test_data import write_voc


def square_voc(root, box=(4, 8, 20, 28)):
    """One 32 x 32 black PNG with a white box, annotated as class 'sq'."""
    write_voc(root, "s", "s.png", [("sq", box)], size=(32, 32), write_img=False)
    img = np.zeros((32, 32, 3), np.uint8)
    img[box[1]:box[3], box[0]:box[2]] = 255
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / "JPEGImages" / "s.png")
    return load(root)


def test_batch_targets_follow_the_image_flipped_or_not(tmp_path):
    cfg = SSDConfig(num_classes=1, input_size=32)
    task = DetectTraining(square_voc(tmp_path), cfg, batch_size=16)
    images, loc, cls = task.batch(np.random.default_rng(0))
    assert images.shape == (16, 3, 32, 32) and loc.shape == (16, len(task.priors), 4)
    flipped = 0
    for img, l, c in zip(images.numpy(), loc.numpy(), cls.numpy()):
        ys, xs = np.nonzero(img[0] > 0.5)  # the white square, as drawn in this (maybe flipped) image
        drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 32
        boxes = decode(l[c > 0], task.priors[c > 0])
        np.testing.assert_allclose(boxes, np.broadcast_to(drawn, boxes.shape), atol=1e-5)
        flipped += (drawn[0] + drawn[2]) / 2 > 0.5  # its centre is right of the middle once flipped
    assert 0 < flipped < 16  # both orientations were drawn


def test_fingerprint_changes_with_the_annotations(tmp_path):
    a = fingerprint(square_voc(tmp_path / "a"))
    assert a == fingerprint(square_voc(tmp_path / "b"))
    assert a != fingerprint(square_voc(tmp_path / "c", box=(4, 8, 20, 27)))


def test_class_count_must_match_the_data(tmp_path):
    with pytest.raises(ValueError, match="model has 2 classes, data 1"):
        DetectTraining(square_voc(tmp_path), SSDConfig(num_classes=2, input_size=32))
