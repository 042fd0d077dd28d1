"""Temporal Shift Module (TSM) video networks in Keras (TensorFlow backend).

Two systems, as in Lin et al., "TSM: Temporal Shift Module for Efficient Video
Understanding" (ICCV 2019) and its online demo:

* ``mobilenetv2`` **online**: one frame per inference; at every residual
  inverted-bottleneck the first ``C // fold_div`` channels are replaced by the
  same channels of the *previous* frame, kept in a shift buffer
  (10 shifts -> 11 kernels at the standard MobileNetV2 layout);
* ``resnet50`` **offline**: ``n_frames`` frames per batch; at every bottleneck
  one fold of channels comes from the next frame and one from the previous
  frame (bidirectional shift inside the clip; 16 shifts -> 17 kernels).

A DPU cannot run the shift, so :func:`build` with ``split=True`` returns the
network cut at every shift: kernel 0 takes the image, kernel ``k >= 1`` takes
``kKK_shift`` (the shift-concat tensor the host builds) and ``kKK_residual``
(the tensor before the shift, for the residual branch), and every kernel but
the last outputs the tensor the next shift acts on.  The host does the shifts
(:mod:`greenpipe.video.host`).  With ``split=False`` it returns the unified
model; ``shift=False`` in the config gives the no-shift TSN baseline (same
network, one kernel).

Layout is NHWC float32 (TensorFlow's), images in [0, 1] normalised inside
kernel 0.  Layers are created once per :class:`TSMNet` and shared by every
graph built from it, so the unified, clip and split graphs hold the same
weights by construction.  Checkpoints (:func:`save_checkpoint`) store the
config beside the weights, so loading needs nothing else.

TensorFlow is imported inside functions only: importing this module is cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from greenpipe.errors import GreenpipeError

# ImageNet statistics; kernel 0 normalises so its input is the plain [0, 1] frame.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TSMConfig:
    """Architecture of a :class:`TSMNet`; stored in every checkpoint.

    ``input_size`` is H = W of a frame in px; ``n_frames`` the frames per clip
    (the batch of the offline model, the training clip length of the online
    one); ``fold_div`` = 8 shifts 1/8 of the channels each way.
    """

    arch: Literal["mobilenetv2", "resnet50"] = "mobilenetv2"
    num_classes: int = 7
    input_size: int = 64
    n_frames: int = 8
    shift: bool = True  # False: TSN baseline (same network, no temporal shift)
    fold_div: int = 8
    width_mult: float = 1.0  # MobileNetV2 channel multiplier
    last_channel: int = 1280  # MobileNetV2 head width (times max(1, width_mult), as torchvision)
    resnet_width: int = 64  # ResNet stem width (64 = ResNet50)
    resnet_blocks: tuple[int, ...] = (3, 4, 6, 3)  # bottlenecks per stage (ResNet50)

    def __post_init__(self) -> None:
        if self.arch not in ("mobilenetv2", "resnet50"):
            raise GreenpipeError(f"TSMConfig.arch = {self.arch!r}: expected 'mobilenetv2' or 'resnet50'")
        object.__setattr__(self, "resnet_blocks", tuple(self.resnet_blocks))

    @property
    def online(self) -> bool:
        """MobileNetV2 runs online (causal shift through buffers), ResNet50 offline (bidirectional)."""
        return self.arch == "mobilenetv2"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["resnet_blocks"] = list(self.resnet_blocks)
        return d


# --------------------------------------------------------------------------- the shift


def temporal_shift(x, n_frames: int, fold_div: int = 8, bidirectional: bool = True):
    """TSM's shift over a clip batch; pure (keras.ops on tensors or numpy arrays).

    ``x``: (N*T, H, W, C) with T = ``n_frames`` consecutive frames per clip.
    Bidirectional (offline): channels ``[0, f)`` of frame t come from frame
    t+1, ``[f, 2f)`` from frame t-1, the rest stay (f = C // fold_div); frames
    off the clip's ends give zeros.  Causal (online): channels ``[0, f)`` come
    from frame t-1, which is what the online model's shift buffer computes.
    """
    from keras import ops

    h, w, c = (int(d) for d in x.shape[1:])
    fold = c // fold_div
    v = ops.reshape(x, (-1, n_frames, h, w, c))  # (N, T, H, W, C)
    zero = ops.zeros_like(v[:, :1])  # (N, 1, H, W, C)
    past = ops.concatenate([zero, v[:, :-1]], axis=1)  # (N, T, H, W, C): frame t holds frame t-1
    if bidirectional:
        future = ops.concatenate([v[:, 1:], zero], axis=1)  # frame t holds frame t+1
        out = ops.concatenate([future[..., :fold], past[..., fold : 2 * fold], v[..., 2 * fold :]], axis=-1)
    else:
        out = ops.concatenate([past[..., :fold], v[..., fold:]], axis=-1)
    return ops.reshape(out, (-1, h, w, c))  # (N*T, H, W, C)


def online_shift(x, buffer, fold_div: int = 8):
    """One online step: ``(shifted, new_buffer)``; pure (keras.ops or numpy slicing).

    ``x``: (1, H, W, C) this frame; ``buffer``: (1, H, W, f) the previous
    frame's first f = C // fold_div channels.  ``shifted`` is the buffer
    followed by this frame's channels ``[f, C)``; ``new_buffer`` is this
    frame's ``[0, f)``.
    """
    fold = int(x.shape[-1]) // fold_div
    if isinstance(x, np.ndarray):
        return np.concatenate([buffer, x[..., fold:]], axis=-1), x[..., :fold]
    from keras import ops

    return ops.concatenate([buffer, x[..., fold:]], axis=-1), x[..., :fold]


# --------------------------------------------------------------------------- the network


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding for width multipliers."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@dataclass
class Unit:
    """One piece of the network in pipeline order.

    A plain unit maps x -> x.  A shift unit (``shift=True``) maps
    ``(shifted, residual) -> x``; a kernel boundary sits before each one.
    """

    fn: Callable
    shift: bool = False


@dataclass
class TSMNet:
    """The layers of one TSM network, in pipeline order, shared by every graph built from them."""

    config: TSMConfig
    units: list[Unit] = field(default_factory=list)
    head: Callable | None = None

    @property
    def n_shifts(self) -> int:
        return sum(u.shift for u in self.units) if self.config.shift else 0

    @property
    def n_kernels(self) -> int:
        return self.n_shifts + 1


def _layers():
    import keras

    return keras.layers


def _conv_bn(name: str, filters: int, kernel: int, stride: int = 1, act: str | None = "relu6",
             depthwise: bool = False) -> Callable:
    L = _layers()
    if depthwise:
        conv = L.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dw")
    else:
        conv = L.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")
    bn = L.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")
    relu = {"relu6": L.ReLU(6.0, name=f"{name}_relu6"), "relu": L.ReLU(name=f"{name}_relu"), None: None}[act]

    def apply(x, training=None):
        x = bn(conv(x), training=training)
        return relu(x) if relu is not None else x

    return apply


def _normalise_layer(name: str):
    L = _layers()
    return L.Normalization(mean=list(MEAN), variance=[s * s for s in STD], axis=-1, name=name)


def _mobilenetv2(config: TSMConfig) -> TSMNet:
    L = _layers()
    w = config.width_mult
    net = TSMNet(config)
    norm = _normalise_layer("normalise")
    stem_c = make_divisible(32 * w)
    stem = _conv_bn("stem", stem_c, 3, 2)
    net.units.append(Unit(lambda x, training=None: stem(norm(x), training)))
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    cin, idx = stem_c, 0
    for t, c, n, s in settings:
        # As TSM's online MobileNetV2: the t = 1 block keeps 16 channels at any width, so the
        # shift blocks (stride 1, cin == cout) are the same ten at every width multiplier.
        cout = make_divisible(c * w) if t > 1 else c
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = round(cin * t)
            name = f"b{idx:02d}"
            layers = []
            if t != 1:
                layers.append(_conv_bn(f"{name}_expand", hidden, 1))
            layers.append(_conv_bn(f"{name}_depthwise", hidden, 3, stride, depthwise=True))
            residual = stride == 1 and cin == cout
            layers.append(_conv_bn(f"{name}_project", cout, 1, act=None))

            def branch(x, training=None, layers=layers):
                for layer in layers:
                    x = layer(x, training)
                return x

            if residual and t == 1:
                # Only at widths where 32 * width_mult rounds to 16: a plain residual block. TSM's shifts sit in
                # the ten expanding residual blocks (its shift_block_idx), whatever the width.
                add = L.Add(name=f"{name}_add")
                net.units.append(Unit(lambda x, training=None, branch=branch, add=add: add([x, branch(x, training)])))
            elif residual:
                add = L.Add(name=f"{name}_add")
                # InvertedResidualWithShift: x + conv(shift(x)); the shift feeds only the branch.
                net.units.append(Unit(lambda s_, r, training=None, branch=branch, add=add:
                                      add([r, branch(s_, training)]), shift=True))
            else:
                net.units.append(Unit(branch))
            cin, idx = cout, idx + 1
    last = make_divisible(config.last_channel * max(1.0, w))
    head_conv = _conv_bn("head", last, 1)
    pool = L.GlobalAveragePooling2D(name="pool")
    fc = L.Dense(config.num_classes, name="logits")
    net.head = lambda x, training=None: fc(pool(head_conv(x, training)))
    return net


def _resnet(config: TSMConfig) -> TSMNet:
    L = _layers()
    net = TSMNet(config)
    norm = _normalise_layer("normalise")
    width = config.resnet_width
    stem = _conv_bn("stem", width, 7, 2, act="relu")
    pool = L.MaxPooling2D(3, 2, padding="same", name="stem_pool")
    net.units.append(Unit(lambda x, training=None: pool(stem(norm(x), training))))
    cin, idx = width, 0
    for stage, blocks in enumerate(config.resnet_blocks):
        planes = width * 2**stage
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 0) else 1
            name = f"b{idx:02d}"
            c1 = _conv_bn(f"{name}_c1", planes, 1, act="relu")
            c2 = _conv_bn(f"{name}_c2", planes, 3, stride, act="relu")
            c3 = _conv_bn(f"{name}_c3", planes * 4, 1, act=None)
            down = _conv_bn(f"{name}_down", planes * 4, 1, stride, act=None) if (stride != 1 or cin != planes * 4) \
                else None
            add, relu = L.Add(name=f"{name}_add"), L.ReLU(name=f"{name}_out")

            def block(s_, r, training=None, c1=c1, c2=c2, c3=c3, down=down, add=add, relu=relu):
                # TSM's residual shift: the shift feeds conv1 only; the identity path keeps the frame's own x.
                y = c3(c2(c1(s_, training), training), training)
                return relu(add([down(r, training) if down is not None else r, y]))

            net.units.append(Unit(block, shift=True))
            cin, idx = planes * 4, idx + 1
    gap = L.GlobalAveragePooling2D(name="pool")
    fc = L.Dense(config.num_classes, name="logits")
    net.head = lambda x, training=None: fc(gap(x))
    return net


def make_net(config: TSMConfig) -> TSMNet:
    """Fresh layers (random init) for ``config``; :func:`build` composes graphs from them."""
    return _mobilenetv2(config) if config.arch == "mobilenetv2" else _resnet(config)


def _apply_unit(unit: Unit, x, shifted, training=None):
    return unit.fn(shifted, x, training) if unit.shift else unit.fn(x, training)


def clip_model(net: TSMNet, clips: int | None = 1):
    """The training / offline graph: (clips*T, H, W, 3) frames -> (clips*T, classes) per-frame logits.

    ``clips=None`` leaves the batch dimension free (any whole number of clips).

    Shifts act inside each clip of T = n_frames frames: bidirectional for the
    offline ResNet, causal (from the past only) for the online MobileNetV2,
    which makes this graph compute exactly what the online model computes
    frame by frame from zero buffers.
    """
    import keras

    cfg = net.config
    s = cfg.input_size
    x = inp = keras.Input((s, s, 3), batch_size=None if clips is None else clips * cfg.n_frames, name="frames")
    for unit in net.units:
        shifted = None
        if unit.shift:
            shifted = temporal_shift(x, cfg.n_frames, cfg.fold_div, bidirectional=not cfg.online) if cfg.shift else x
        x = _apply_unit(unit, x, shifted)
    return keras.Model(inp, net.head(x), name=f"tsm_{cfg.arch}_clip")


def _boundary_shapes(net: TSMNet) -> list[tuple[int, ...]]:
    """(H, W, C) of the tensor entering each shift unit, in order."""
    import keras

    s = net.config.input_size
    x = keras.Input((s, s, 3), batch_size=1)
    shapes = []
    for unit in net.units:
        if unit.shift:
            shapes.append(tuple(int(d) for d in x.shape[1:]))
        x = _apply_unit(unit, x, x)
    return shapes


def online_model(net: TSMNet):
    """The unified online model: (frame, buffers...) -> (logits, new buffers...), one frame per call.

    Inputs ``frame`` (1, H, W, 3) and ``buf_KK`` (1, h, w, f) for each shift;
    outputs ``logits`` (1, classes) and ``next_buf_KK``; the caller feeds each
    ``next_buf_KK`` back as ``buf_KK`` on the next frame (zeros at the start).
    """
    import keras

    cfg = net.config
    if not cfg.online:
        raise GreenpipeError(f"online_model: arch {cfg.arch!r} is offline; use clip_model (n_frames per batch)")
    s = cfg.input_size
    frame = keras.Input((s, s, 3), batch_size=1, name="frame")
    shapes = _boundary_shapes(net) if cfg.shift else []
    bufs = [keras.Input((h, w, c // cfg.fold_div), batch_size=1, name=f"buf_{k + 1:02d}")
            for k, (h, w, c) in enumerate(shapes)]
    x, new_bufs, k = frame, [], 0
    for unit in net.units:
        shifted = None
        if unit.shift:
            if cfg.shift:
                shifted, nb = online_shift(x, bufs[k], cfg.fold_div)
                new_bufs.append(keras.layers.Identity(name=f"next_buf_{k + 1:02d}")(nb))
                k += 1
            else:
                shifted = x
        x = _apply_unit(unit, x, shifted)
    logits = keras.layers.Identity(name="logits_out")(net.head(x))
    return keras.Model([frame, *bufs], [logits, *new_bufs], name=f"tsm_{cfg.arch}_online")


def kernel_name(k: int) -> str:
    return f"k{k:02d}"


def split_models(net: TSMNet) -> tuple[list[Any], dict]:
    """The network cut at every shift: (kernels, manifest).

    Kernel 0: ``k00_input`` (B, H, W, 3) -> ``k00_output``.  Kernel k >= 1:
    ``kKK_shift`` and ``kKK_residual`` (B, h, w, c) -> ``kKK_output`` (the
    last kernel's output is the logits).  B = 1 online, n_frames offline.
    The manifest lists every kernel's input and output names and shapes in
    order (what ``vai_q_tensorflow --input_nodes/--input_shapes/--output_nodes``
    takes) and, per boundary, the channel fold the host shifts.
    """
    import keras

    cfg = net.config
    batch = 1 if cfg.online else cfg.n_frames
    s = cfg.input_size
    groups: list[list[Unit]] = [[]]
    for unit in net.units:
        if unit.shift and cfg.shift:
            groups.append([])
        groups[-1].append(unit)
    kernels, entries = [], []
    for k, units in enumerate(groups):
        name = kernel_name(k)
        if k == 0:
            x = inp = keras.Input((s, s, 3), batch_size=batch, name=f"{name}_input")
            inputs = [inp]
        else:
            prev = kernels[-1].outputs[0]
            shape = tuple(int(d) for d in prev.shape[1:])
            sh = keras.Input(shape, batch_size=batch, name=f"{name}_shift")
            res = keras.Input(shape, batch_size=batch, name=f"{name}_residual")
            inputs, x = [sh, res], None
        for i, unit in enumerate(units):
            x = unit.fn(sh, res) if (k > 0 and i == 0) else _apply_unit(unit, x, x)
        if k == len(groups) - 1:
            x = net.head(x)
        out = keras.layers.Identity(name=f"{name}_output")(x)
        model = keras.Model(inputs, out, name=name)
        kernels.append(model)
        entries.append({
            "name": name,
            "inputs": [{"name": t.name, "shape": [batch, *(int(d) for d in t.shape[1:])]} for t in inputs],
            "outputs": [{"name": f"{name}_output", "shape": [batch, *(int(d) for d in out.shape[1:])]}],
            "fold": 0 if k == 0 else int(inputs[0].shape[-1]) // cfg.fold_div,
        })
    manifest = {
        "arch": cfg.arch,
        "mode": "online" if cfg.online else "offline",
        "layout": "NHWC float32; kernel 0 takes frames in [0, 1]",
        "shift": ("causal: channels [0, fold) from the previous frame (shift buffer)" if cfg.online
                  else "bidirectional in the batch: [0, fold) from frame t+1, [fold, 2*fold) from frame t-1"),
        "kernels": entries,
    }
    return kernels, manifest


def build(net: TSMNet, split: bool = False):
    """The unified model (``split=False``) or ``(kernels, manifest)`` cut at every shift.

    Unified: :func:`online_model` for the online MobileNetV2, :func:`clip_model`
    for the offline ResNet.
    """
    if split:
        return split_models(net)
    return online_model(net) if net.config.online else clip_model(net)


# --------------------------------------------------------------------------- checkpoints


def _weights_by_name(model) -> dict[str, np.ndarray]:
    out = {}
    for layer in model.layers:
        for i, w in enumerate(layer.get_weights()):
            out[f"{layer.name}/{i}"] = w
    return out


def save_checkpoint(path: str | Path, net: TSMNet, meta: dict | None = None) -> None:
    """Write a self-describing checkpoint: config + weights by layer name (+ ``meta``) in one .npz."""
    import io

    from greenpipe.io import atomic_write_bytes

    weights = _weights_by_name(clip_model(net))
    header = {"recipe": "video", "model_args": net.config.to_dict(), **(meta or {})}
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **weights)
    atomic_write_bytes(path, buf.getvalue())


def read_header(path: str | Path) -> dict:
    """The checkpoint's header: ``recipe``, ``model_args`` and what training recorded."""
    try:
        with np.load(path) as z:
            return json.loads(bytes(z["__header__"]).decode())
    except FileNotFoundError:
        raise GreenpipeError(f"{path}: no checkpoint; run the video train stage first (dvc repro video_train)") \
            from None
    except (KeyError, ValueError, OSError) as exc:
        raise GreenpipeError(f"{path}: not a greenpipe video checkpoint ({exc}); retrain with "
                             "`dvc repro video_train`") from None


def load_checkpoint(path: str | Path) -> tuple[TSMNet, dict]:
    """Rebuild the network a checkpoint describes with its weights; return (net, header)."""
    header = read_header(path)
    net = make_net(TSMConfig(**header["model_args"]))
    model = clip_model(net)  # creates every layer's weights
    with np.load(path) as z:
        for layer in model.layers:
            n = len(layer.get_weights())
            if n:
                layer.set_weights([z[f"{layer.name}/{i}"] for i in range(n)])
    return net, header
