"""SSD core: box maths, matching, NMS, loss, and the ONNX graph against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenpipe.recipes.detect.boxes import decode, encode, iou, match, prior_boxes, to_corners
from greenpipe.recipes.detect.loss import multibox_loss
from greenpipe.recipes.detect.model import BACKBONES, SSDConfig, build_ssd
from greenpipe.recipes.detect.postprocess import detections, nms


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 0.7, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (n, 2))], 1)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    priors = prior_boxes([4, 2, 1])
    boxes = random_boxes(rng, len(priors))
    np.testing.assert_allclose(decode(encode(boxes, priors), priors), boxes, atol=1e-5)
    # a box equal to its prior encodes to zero offsets
    np.testing.assert_allclose(encode(to_corners(priors), priors), 0.0, atol=1e-5)


def test_priors_follow_the_maps_and_scales():
    priors = prior_boxes([2, 1])
    assert priors.shape == (2 * 2 * 4 + 4, 4)
    np.testing.assert_allclose(priors[:4, :2], 0.25)  # first cell's centre, all 4 boxes
    np.testing.assert_allclose(priors[0, 2:], 0.2)  # s_min
    np.testing.assert_allclose(priors[-4, 2:], 0.9)  # s_max on the last map


def test_iou_on_hand_made_boxes():
    a = np.array([[0.0, 0.0, 0.5, 0.5]])
    b = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5], [0.5, 0.5, 1.0, 1.0]])
    np.testing.assert_allclose(iou(a, b), [[1.0, 1 / 3, 0.0]])


def test_matching_on_hand_made_boxes():
    # priors (centre-size) as corners: [0, 0, .5, .5], [0, .05, .5, .55], [.2, .7, .3, .8], [.5, 0, 1, 1]
    priors = np.array([[0.25, 0.25, 0.5, 0.5], [0.25, 0.3, 0.5, 0.5], [0.25, 0.75, 0.1, 0.1],
                       [0.75, 0.5, 0.5, 1.0]], np.float32)
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 1.0], [0.2, 0.7, 0.25, 0.72]])
    labels = np.array([2, 0, 1])
    loc, cls = match(gt, labels, priors)
    # prior 0 is box 0 exactly; prior 1 overlaps box 0 with IoU .225/.275 >= 0.5; prior 3 is box 1;
    # box 2 overlaps prior 2 with IoU 0.1 only, but a box always claims its best prior
    assert cls.tolist() == [3, 3, 2, 1]
    np.testing.assert_allclose(loc[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(decode(loc, priors), gt[[0, 0, 2, 1]], atol=1e-6)
    # below the threshold and not anyone's best prior: background, zero offsets
    loc, cls = match(gt[:1], labels[:1], priors)
    assert cls.tolist() == [3, 3, 0, 0] and not loc[2:].any()
    loc, cls = match(np.zeros((0, 4)), np.zeros(0, np.int64), priors)
    assert not cls.any() and not loc.any()


def brute_force_nms(boxes, scores, threshold):
    """The definition, one pair at a time in plain Python."""
    def pair_iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    kept = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(pair_iou(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_nms_equals_the_brute_force_definition(seed):
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, 60), rng.uniform(size=60)
    for threshold in (0.3, 0.5):
        assert nms(boxes, scores, threshold).tolist() == brute_force_nms(boxes, scores, threshold)
        for limit in (1, 5, 1000):  # stopping early keeps the head of the same list
            assert nms(boxes, scores, threshold, limit).tolist() == brute_force_nms(boxes, scores, threshold)[:limit]


def test_detections_keep_classes_apart():
    # two identical boxes, one per class: per-class NMS keeps both; within a class the copy goes
    priors = np.array([[0.5, 0.5, 0.4, 0.4]] * 3, np.float32)
    logits = np.array([[0, 5, 0], [0, 0, 5], [0, 4, 0]], np.float32)  # bg, class 0, class 1
    raw = np.concatenate([np.zeros((3, 4), np.float32), logits], 1)[None]
    (d,) = detections(raw, priors, score_threshold=0.5)
    assert sorted(d.classes.tolist()) == [0, 1]
    np.testing.assert_allclose(d.boxes, [[0.3, 0.3, 0.7, 0.7]] * 2, atol=1e-6)


def tiny_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image with one or two bright squares on noise, their corner boxes and class (by colour)."""
    img = rng.uniform(0, 0.2, (3, size, size)).astype(np.float32)
    boxes, labels = [], []
    for _ in range(rng.integers(1, 3)):
        side = rng.integers(size // 4, size // 2)
        x, y = rng.integers(0, size - side, 2)
        c = int(rng.integers(0, 2))
        img[c, y:y + side, x:x + side] = 1.0
        boxes.append([x / size, y / size, (x + side) / size, (y + side) / size])
        labels.append(c)
    return img, np.array(boxes), np.array(labels)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_loss_falls_on_a_tiny_overfit_run(backbone):
    torch.manual_seed(0)
    cfg = SSDConfig(num_classes=2, backbone=backbone, width=4, input_size=32)
    model, priors = build_ssd(cfg.to_dict()), cfg.priors()
    rng = np.random.default_rng(0)
    scenes = [tiny_scene(rng, 32) for _ in range(2)]
    x = torch.from_numpy(np.stack([s[0] for s in scenes]))
    targets = [match(b, l, priors) for _, b, l in scenes]
    loc_t = torch.from_numpy(np.stack([t[0] for t in targets]))
    cls_t = torch.from_numpy(np.stack([t[1] for t in targets]))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(25):
        loss = multibox_loss(model(x), loc_t, cls_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    # one positive; with every background prior predicted perfectly except three, the loss is
    # the positive's plus exactly those three, whatever the other background priors say
    n_priors = 20
    cls_t = torch.zeros(1, n_priors, dtype=torch.long)
    cls_t[0, 0] = 1
    outputs = torch.zeros(1, n_priors, 7)
    outputs[0, :, 4] = 20.0  # confident background everywhere
    outputs[0, 0, 4:] = torch.tensor([0.0, 20.0, 0.0])  # the positive: confident, right class
    outputs[0, 1:4, 4:] = torch.tensor([0.0, 0.0, 20.0])  # three wrong background priors
    outputs[0, 4, 4:] = torch.tensor([0.0, 0.0, 19.0])  # a fourth, less wrong: not mined
    loss = multibox_loss(outputs, torch.zeros(1, n_priors, 4), cls_t)
    ce_wrong = torch.nn.functional.cross_entropy(torch.tensor([[0.0, 0.0, 20.0]]), torch.tensor([0]))
    ce_right = torch.nn.functional.cross_entropy(torch.tensor([[0.0, 20.0, 0.0]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(3 * ce_wrong.item() + ce_right.item(), rel=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_model_maps_match_the_priors_and_onnx_equals_pytorch(backbone, tmp_path):
    import onnxruntime as ort

    from greenpipe.quant.export import export_onnx

    cfg = SSDConfig(num_classes=3, backbone=backbone, width=4, input_size=64)
    model = build_ssd(cfg.to_dict()).eval()
    x = torch.rand(2, 3, 64, 64)
    assert [f.shape[-1] for f in model.features(x)] == cfg.feature_sizes() == [8, 4, 2, 1]
    with torch.no_grad():
        expected = model(x).numpy()
    assert expected.shape == (2, len(cfg.priors()), 4 + 4)
    path = export_onnx(model, x[:1], tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # the shared post-process gives the same detections from either runtime
    priors = cfg.priors()
    for a, b in zip(detections(got, priors), detections(expected, priors)):
        # Detections whose scores tie to float precision may come out in either order: compare them sorted.
        order_a = np.lexsort((*np.round(a.boxes, 3).T, a.classes))
        order_b = np.lexsort((*np.round(b.boxes, 3).T, b.classes))
        np.testing.assert_allclose(a.boxes[order_a], b.boxes[order_b], atol=1e-4)
        assert a.classes[order_a].tolist() == b.classes[order_b].tolist()
