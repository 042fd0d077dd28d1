"""Training and float evaluation of a TSM / TSN network on clips held in memory.

Clips are (N, T, H, W, 3) uint8; the network sees (N*T, H, W, 3) float32 in
[0, 1] and its per-frame logits are averaged over each clip (TSN's average
consensus), online from the second frame on (:func:`scored_frames`).  Augmentations keep the camera-motion labels true: a horizontal
flip swaps pan_left / pan_right, a vertical flip pan_up / pan_down, playing
the clip backwards swaps every direction and zoom_in / zoom_out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from greenpipe.data.video import CLASSES
from greenpipe.models.tsm_tf import TSMNet, clip_model

def _swap_table(pairs: tuple[tuple[str, str], ...]) -> np.ndarray:
    table = np.arange(len(CLASSES))
    for a, b in pairs:
        table[CLASSES.index(a)], table[CLASSES.index(b)] = CLASSES.index(b), CLASSES.index(a)
    return table


HFLIP = _swap_table((("pan_left", "pan_right"),))
VFLIP = _swap_table((("pan_up", "pan_down"),))
REVERSE = _swap_table((("pan_left", "pan_right"), ("pan_up", "pan_down"), ("zoom_in", "zoom_out")))


def augment(clips: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            classes: tuple[str, ...] | list[str], group: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Label-preserving flips and time reversal of (N, T, H, W, 3) clips (camera-motion classes only).

    Spatial flips are drawn once per ``group`` consecutive clips (one scene), so
    the clips of a group keep showing the same content.
    """
    if tuple(classes) != CLASSES:
        return clips, labels  # other datasets' labels do not say what a flip does to them
    clips, labels = clips.copy(), labels.copy()
    for i in range(len(clips)):
        if i % group == 0:
            hflip, vflip = rng.random() < 0.5, rng.random() < 0.5
        if hflip:
            clips[i], labels[i] = clips[i][:, :, ::-1], HFLIP[labels[i]]
        if vflip:
            clips[i], labels[i] = clips[i][:, ::-1], VFLIP[labels[i]]
        if rng.random() < 0.5:
            clips[i], labels[i] = clips[i][::-1], REVERSE[labels[i]]
    return clips, labels


def to_frames(clips: np.ndarray) -> np.ndarray:
    """(N, T, H, W, 3) uint8 -> (N*T, H, W, 3) float32 in [0, 1]."""
    n, t = clips.shape[:2]
    return clips.reshape(n * t, *clips.shape[2:]).astype(np.float32) / 255.0


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_clips: int
    lr: float
    weight_decay: float
    seed: int
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9, Nesterov)
    bn: str = "batch"  # batch: BN on batch statistics (standard); running: on running statistics only


def scored_frames(net: TSMNet) -> slice:
    """The frames of a clip whose logits count: online, every frame after the first (the first has only
    zero shift buffers behind it, so it cannot see motion; training does not score it either)."""
    return slice(1, None) if net.config.online and net.config.n_frames > 1 else slice(None)


def clip_logits(net: TSMNet, clips: np.ndarray, batch_clips: int = 32) -> np.ndarray:
    """Per-clip logits (N, classes): per-frame logits of the float clip model averaged over the scored frames.

    Inference mode (BN on its running statistics), so the result does not
    depend on ``batch_clips``.  Each eager call has a fixed cost that small
    clips do not amortise: on the quick profile's 336 val clips, 32 per call
    takes half the time of 8 per call for about 180 MB more memory (64: a
    quarter of the time, 400 MB more).
    """
    t = net.config.n_frames
    model = clip_model(net, clips=None)
    out = []
    for i in range(0, len(clips), batch_clips):
        chunk = clips[i : i + batch_clips]
        logits = model(to_frames(chunk), training=False).numpy()
        out.append(logits.reshape(len(chunk), t, -1)[:, scored_frames(net)].mean(axis=1))
    return np.concatenate(out)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(100.0 * np.mean(np.argmax(logits, axis=1) == labels))


def fit(net: TSMNet, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
        settings: TrainSettings, classes: list[str], eval_every: int = 0, group: int = 1,
        log: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Train ``net`` in place (AdamW, cosine schedule, cross-entropy on every frame after the first).

    ``group`` > 1: the train clips come in groups of that many consecutive
    clips shot from one scene with different labels (the built-in set); a
    batch is whole groups, so what the clips show cannot predict the label and
    only the motion between frames can.  Returns the curve: one row per
    evaluation with step, loss and val top-1 (%).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    t = net.config.n_frames
    frames_model = clip_model(net, clips=None)
    schedule = keras.optimizers.schedules.CosineDecay(settings.lr, settings.steps, alpha=0.05)
    if settings.optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay)
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=settings.weight_decay)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        if settings.bn == "running":
            # BN normalises with running statistics, updated by a separate pass, never with the
            # statistics of the batch inside the gradient: those mix a clip's frames and a batch's
            # clips, so a network can compare a frame with its batch (motion seen without any shift,
            # in training only).  Leak-free, but from scratch it learns much more slowly.
            frames_model(x, training=True)
        with tf.GradientTape() as tape:
            logits = frames_model(x, training=settings.bn == "batch")
            per_frame = tf.reshape(logits, (-1, t, logits.shape[-1]))  # (N, T, classes)
            # Every frame after the first is scored: online, each frame's output is a prediction
            # (the first has only zero shift buffers behind it, so it cannot see motion).
            loss = ce(tf.repeat(y[:, None], t - 1, axis=1), per_frame[:, 1:])
        grads = tape.gradient(loss, frames_model.trainable_variables)
        opt.apply_gradients(zip(grads, frames_model.trainable_variables))
        return loss

    clips, labels = train
    curve, losses, t0 = [], [], time.perf_counter()
    for s in range(1, settings.steps + 1):
        if group > 1:
            starts = rng.choice(len(clips) // group, size=max(settings.batch_clips // group, 1), replace=False)
            idx = (starts[:, None] * group + np.arange(group)).ravel()
        else:
            idx = rng.choice(len(clips), size=settings.batch_clips, replace=False)
        xb, yb = augment(clips[idx], labels[idx], rng, classes, group)
        losses.append(float(step(tf.constant(to_frames(xb)), tf.constant(yb))))
        if (eval_every and s % eval_every == 0) or s == settings.steps:
            acc = top1(clip_logits(net, val[0]), val[1])
            curve.append({"step": s, "loss": float(np.mean(losses[-eval_every or -1:])), "val_top1": acc,
                          "wall_s": time.perf_counter() - t0})
            log(f"step {s}/{settings.steps} loss {curve[-1]['loss']:.3f} val top-1 {acc:.1f}%")
    return curve
