"""The host loop: run a TSM network's K kernels in order and do the shifts on the CPU.

This is what runs beside a DPU (or on a CPU with TFLite): kernel 0 takes the
pre-processed frame; between kernel k-1 and kernel k the host builds the
shift-concat tensor and passes the unshifted tensor as the residual input.

* **online** (MobileNetV2): one frame per step; boundary k keeps a shift
  buffer, the previous frame's first ``fold`` channels.  Buffers start at
  real zero (the quantized zero point in int8) and persist across frames
  until :meth:`HostPipeline.reset` (a new video).
* **offline** (ResNet50): one clip of T frames per step; the shift is
  bidirectional inside the batch (:func:`shift_clip`).

Tensors between kernels stay in the producing kernel's representation (int8
for int8 kernels): the shift only moves channels, so int8 buffers are exact.
When the consuming kernel's input quantization differs from the producer's
output quantization, the host rescales (``q' = round((q - zp) * s / s') + zp'``),
and counts how often it had to.

Every step records where its time goes: pre-process, each kernel, each shift.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from greenpipe.errors import GreenpipeError


@dataclass(frozen=True)
class TensorInfo:
    """One kernel input or output: name, shape, dtype and (scale, zero_point) when quantized."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0  # 0 = float tensor
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


class Kernel(Protocol):
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the kernel on named inputs; return named outputs."""


class KerasKernel:
    """A float Keras kernel (from :func:`greenpipe.models.tsm_tf.split_models`) behind the Kernel interface."""

    def __init__(self, model: Any):
        self.model = model
        self.inputs = [TensorInfo(t.name, tuple(int(d) for d in t.shape), np.dtype(np.float32))
                       for t in model.inputs]
        self.outputs = [TensorInfo(f"{model.name}_output", tuple(int(d) for d in model.outputs[0].shape),
                                   np.dtype(np.float32))]

    def invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [feeds[i.name] for i in self.inputs]
        return {self.outputs[0].name: np.asarray(self.model(args, training=False))}


def _named(name: str, actual: list[str]) -> str | None:
    """The one tensor of ``actual`` that is ``name``, or ``name`` with a compiler's prefix / suffix."""
    if name in actual:
        return name
    token = re.compile(rf"(^|[^0-9A-Za-z]){re.escape(name)}($|[^0-9A-Za-z])")
    hits = [a for a in actual if token.search(a)]
    return hits[0] if len(hits) == 1 else None


class BoundKernel:
    """A kernel whose tensors carry the split manifest's names (``kKK_shift``, ``kKK_residual``, ``kKK_output``).

    Compilers decorate names (``k01_shift`` may come back from vai_c as
    ``k01_shift_aquant`` or ``quant_k01_shift``); :func:`bind` finds each
    manifest name as a whole token in the kernel's own names, and an only
    output is taken whatever it is called.  Outputs are reshaped to the
    manifest's shape (a DPU gives logits as (N, 1, 1, C) where the model said (N, C)).
    """

    def __init__(self, kernel: Kernel, in_names: dict[str, str], out_names: dict[str, str], entry: dict):
        self.kernel, self._in, self._out = kernel, in_names, out_names  # manifest name -> kernel's name
        own_in = {i.name: i for i in kernel.inputs}
        own_out = {o.name: o for o in kernel.outputs}
        shapes = {o["name"]: tuple(o["shape"]) for o in entry["outputs"]}
        self.inputs = [_renamed(own_in[k], m) for m, k in in_names.items()]
        self.outputs = [_renamed(own_out[k], m, shapes[m]) for m, k in out_names.items()]

    def invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        got = self.kernel.invoke({k: feeds[m] for m, k in self._in.items()})
        return {o.name: got[self._out[o.name]].reshape(-1, *o.shape[1:]) for o in self.outputs}

    def describe(self) -> dict[str, Any]:
        return self.kernel.describe()


def _renamed(info: TensorInfo, name: str, shape: tuple[int, ...] | None = None) -> TensorInfo:
    return TensorInfo(name, shape or info.shape, info.dtype, info.scale, info.zero_point)


def bind(kernel: Kernel, entry: dict, where: str = "") -> Kernel:
    """``kernel`` addressed by the names of its split-manifest ``entry``; itself when they already match."""
    want_in = [i["name"] for i in entry["inputs"]]
    want_out = [o["name"] for o in entry["outputs"]]
    own_in, own_out = [i.name for i in kernel.inputs], [o.name for o in kernel.outputs]
    if sorted(own_in) == sorted(want_in) and own_out == want_out:
        return kernel
    in_names = {m: _named(m, own_in) for m in want_in}
    if len(own_out) == len(want_out) == 1:
        out_names = {want_out[0]: own_out[0]}
    else:
        out_names = {m: _named(m, own_out) for m in want_out}
    unmatched = [m for m, k in (*in_names.items(), *out_names.items()) if k is None]
    if unmatched or len(own_in) != len(want_in) or len(set(in_names.values())) != len(in_names):
        raise GreenpipeError(
            f"{where or entry['name']}: cannot match the kernel's tensors {own_in} -> {own_out} to the split "
            f"manifest's {want_in} -> {want_out} (unmatched: {unmatched or 'counts differ'}); the artifact was "
            "built from another split, or its compiler renamed the inputs beyond a prefix / suffix: rebuild it "
            "with `dvc repro video_quantize`"
        )
    return BoundKernel(kernel, in_names, out_names, entry)


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Real values -> ``info``'s representation (float tensors pass through)."""
    if not info.quantized:
        return np.asarray(x, dtype=np.float32)
    lo, hi = np.iinfo(info.dtype).min, np.iinfo(info.dtype).max
    return np.clip(np.round(x / info.scale) + info.zero_point, lo, hi).astype(info.dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    """``info``'s representation -> real values, float32."""
    if not info.quantized:
        return np.asarray(q, dtype=np.float32)
    return ((q.astype(np.float32) - info.zero_point) * info.scale).astype(np.float32)


def same_representation(a: TensorInfo, b: TensorInfo) -> bool:
    return a.dtype == b.dtype and a.scale == b.scale and a.zero_point == b.zero_point


def _rescale(q: np.ndarray, src: TensorInfo, dst: TensorInfo) -> np.ndarray:
    lo, hi = np.iinfo(dst.dtype).min, np.iinfo(dst.dtype).max
    y = np.round((q.astype(np.float32) - src.zero_point) * np.float32(src.scale / dst.scale)) + dst.zero_point
    return np.clip(y, lo, hi).astype(dst.dtype)


def converter(src: TensorInfo, dst: TensorInfo) -> Callable[[np.ndarray], np.ndarray]:
    """``convert`` from ``src``'s representation to ``dst``'s as one function, made once per boundary.

    An 8-bit to 8-bit rescale is a 256-entry table of :func:`convert`'s own results, so the host loop
    does one lookup per element instead of six numpy passes (at a 32 px frame, those passes took longer
    than the int8 kernels they sat between).
    """
    if same_representation(src, dst):
        return lambda q: q
    if src.quantized and dst.quantized and src.dtype.itemsize == dst.dtype.itemsize == 1:
        table = _rescale(np.arange(256, dtype=np.uint8).view(src.dtype), src, dst)
        return lambda q: table[q.view(np.uint8)]
    if src.quantized and dst.quantized:
        return lambda q: _rescale(q, src, dst)
    return lambda q: quantize(dequantize(q, src), dst)


def convert(q: np.ndarray, src: TensorInfo, dst: TensorInfo) -> np.ndarray:
    """A tensor in ``src``'s representation re-expressed in ``dst``'s (int8 -> int8 is a rescale)."""
    return converter(src, dst)(q)


def real_zero(info: TensorInfo, shape: tuple[int, ...]) -> np.ndarray:
    """Zeros in ``info``'s representation (the zero point for a quantized tensor)."""
    return np.full(shape, info.zero_point if info.quantized else 0, dtype=info.dtype)


def shift_clip(x: np.ndarray, fold: int, zero: float = 0) -> np.ndarray:
    """Bidirectional TSM shift of one clip on the host: (T, H, W, C) -> (T, H, W, C).

    Channels ``[0, fold)`` of frame t come from frame t+1, ``[fold, 2 fold)``
    from frame t-1; frames off the ends give ``zero`` (the zero point in int8).
    """
    out = x.copy()
    out[:-1, ..., :fold] = x[1:, ..., :fold]
    out[-1, ..., :fold] = zero
    out[1:, ..., fold : 2 * fold] = x[:-1, ..., fold : 2 * fold]
    out[0, ..., fold : 2 * fold] = zero
    return out


@dataclass
class Timing:
    """Seconds spent per part, summed over the steps since the last reset."""

    preprocess: float = 0.0
    kernels: list[float] = field(default_factory=list)
    shifts: list[float] = field(default_factory=list)
    steps: int = 0

    def per_step_ms(self) -> dict[str, Any]:
        n = max(self.steps, 1)
        return {
            "preprocess_ms": 1e3 * self.preprocess / n,
            "kernel_ms": [1e3 * t / n for t in self.kernels],
            "shift_ms": [1e3 * t / n for t in self.shifts],
            "inference_ms": 1e3 * (sum(self.kernels) + sum(self.shifts)) / n,
        }


class HostPipeline:
    """Runs K kernels with host shifts; ``online`` selects per-frame buffers or per-clip shifts.

    ``manifest`` is the split manifest (greenpipe.models.tsm_tf.split_models):
    its per-kernel ``fold`` says how many channels each boundary shifts.
    ``on_feed(kernel_index, feeds)`` sees every kernel's inputs as fed (the
    calibration dump records them there).
    """

    def __init__(self, kernels: list[Kernel], manifest: dict, online: bool,
                 on_feed: Callable[[int, dict[str, np.ndarray]], None] | None = None):
        if len(kernels) != len(manifest["kernels"]):
            raise ValueError(f"{len(kernels)} kernels but the manifest describes {len(manifest['kernels'])}")
        self.kernels, self.manifest, self.online, self.on_feed = kernels, manifest, online, on_feed
        self.folds = [int(k["fold"]) for k in manifest["kernels"]]
        self.timing = Timing(kernels=[0.0] * len(kernels), shifts=[0.0] * (len(kernels) - 1))
        # Boundaries where the consumer reads another representation than the producer writes.
        self.rescaled = [
            k for k in range(1, len(kernels))
            if not all(same_representation(kernels[k - 1].outputs[0], i) for i in kernels[k].inputs)
        ]
        self.buffers: list[np.ndarray | None] = [None] * len(kernels)
        # Per boundary k: the consumer's shift and residual inputs, and how to convert the producer's output.
        self._feeds: list[tuple[str, Callable, str, Callable] | None] = [None]
        for k in range(1, len(kernels)):
            src = kernels[k - 1].outputs[0]
            by_role = {i.name.rsplit("_", 1)[-1]: i for i in kernels[k].inputs}  # kKK_shift, kKK_residual
            sh, res = by_role["shift"], by_role["residual"]
            self._feeds.append((sh.name, converter(src, sh), res.name, converter(src, res)))

    def reset(self) -> None:
        """Start a new video: every shift buffer back to zero."""
        self.buffers = [None] * len(self.kernels)

    def reset_timing(self) -> None:
        self.timing = Timing(kernels=[0.0] * len(self.kernels), shifts=[0.0] * (len(self.kernels) - 1))

    def _shift(self, k: int, x: np.ndarray) -> dict[str, np.ndarray]:
        """Feeds of kernel k from kernel k-1's output ``x`` (in the producer's representation)."""
        src = self.kernels[k - 1].outputs[0]
        fold = self.folds[k]
        zero = src.zero_point if src.quantized else 0
        if self.online:
            if self.buffers[k] is None:
                self.buffers[k] = real_zero(src, (*x.shape[:-1], fold))
            shifted = np.concatenate([self.buffers[k], x[..., fold:]], axis=-1)
            self.buffers[k] = x[..., :fold].copy()
        else:
            shifted = shift_clip(x, fold, zero)
        sh_name, to_shift, res_name, to_residual = self._feeds[k]
        return {sh_name: to_shift(shifted), res_name: to_residual(x)}

    def step(self, x: np.ndarray, preprocess_s: float = 0.0) -> np.ndarray:
        """Run one frame (online, (1, H, W, 3)) or clip (offline, (T, H, W, 3)) of real values; return logits."""
        tm = self.timing
        t0 = time.perf_counter()
        first = self.kernels[0].inputs[0]
        feeds = {first.name: quantize(x, first)}
        tm.preprocess += preprocess_s + time.perf_counter() - t0
        out = None
        for k, kernel in enumerate(self.kernels):
            if k:
                t0 = time.perf_counter()
                feeds = self._shift(k, out)
                tm.shifts[k - 1] += time.perf_counter() - t0
            if self.on_feed is not None:
                self.on_feed(k, feeds)
            t0 = time.perf_counter()
            out = kernel.invoke(feeds)[kernel.outputs[0].name]
            tm.kernels[k] += time.perf_counter() - t0
        tm.steps += 1
        return dequantize(out, self.kernels[-1].outputs[0])


def smooth(logits: np.ndarray, window: int) -> np.ndarray:
    """Online-demo smoothing: the mean of the last ``window`` frames' logits at every frame. (T, C) -> (T, C)."""
    out = np.empty_like(logits)
    for t in range(len(logits)):
        out[t] = logits[max(0, t - window + 1) : t + 1].mean(axis=0)
    return out


def timed_run(pipe, clips: np.ndarray, frames: int, warmup: int) -> dict:
    """Stream ``frames`` frames (cycling through ``clips``, (N, T, S, S, 3) uint8) and time every part."""
    stream = clips.reshape(-1, *clips.shape[2:])
    per_clip = clips.shape[1]
    pipe.reset()
    pipe.reset_timing()
    t_start = None
    for i in range(warmup + frames):
        if i == warmup:
            pipe.reset_timing()
            t_start = time.perf_counter()
        if i % per_clip == 0:
            pipe.reset()
        t0 = time.perf_counter()
        x = stream[i % len(stream)][None].astype(np.float32) / 255.0  # (1, S, S, 3) in [0, 1]
        pipe.step(x, preprocess_s=time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    ms = pipe.timing.per_step_ms()
    return {
        **ms,
        "fps": 1e3 / (ms["preprocess_ms"] + ms["inference_ms"]),
        "sustained_fps": frames / wall,
        "frames": frames,
        "shift_total_ms": float(sum(ms["shift_ms"])),
        "kernel_total_ms": float(sum(ms["kernel_ms"])),
        "rescaled_boundaries": [pipe.kernels[k].inputs[0].name.split("_")[0] for k in pipe.rescaled],
    }


class ClipRunner:
    """A split TSM network as one Runner: ``run(clip)`` streams a clip through the host loop.

    ``clip`` is (T, S, S, 3) float32 in [0, 1]; the result is the per-frame logits (T, classes),
    online from empty shift buffers (offline: the whole clip in one step). Loaded from a per-kernel
    variant's directory (``kernels.json`` and one artifact per kernel, each run on the runtime the
    manifest names); this is what deploy, the soak and ``video_eval`` run.
    """

    def __init__(self, pipe: HostPipeline, first: dict[str, Any], manifest: dict):
        self.pipe, self.first, self.manifest = pipe, first, manifest

    @classmethod
    def load(cls, variant_dir: str | Path, threads: int, load: Callable[..., Any]) -> ClipRunner:
        """The host loop over ``variant_dir``'s kernels, each loaded by ``load(runtime, path, threads, batch)``."""
        from greenpipe.quant.kernels import read_kernels_manifest

        variant_dir = Path(variant_dir)
        manifest = read_kernels_manifest(variant_dir)
        kernels = [bind(load(manifest["runtime"], variant_dir / k["artifact"], threads, 1), k,
                        str(variant_dir / k["artifact"]))
                   for k in manifest["kernels"]]
        pipe = HostPipeline(kernels, manifest, online=manifest["mode"] == "online")
        return cls(pipe, kernels[0].describe(), manifest)

    def run(self, clip: np.ndarray) -> np.ndarray:
        self.pipe.reset()
        if not self.pipe.online:
            return self.pipe.step(clip)
        return np.concatenate([self.pipe.step(clip[t : t + 1]) for t in range(len(clip))])

    def describe(self) -> dict[str, Any]:
        k = len(self.pipe.kernels)
        return {**self.first, "runtime": self.manifest["runtime"],
                "label": f"{self.first.get('label', self.manifest['runtime'])}, {k} kernels + {k - 1} CPU shifts "
                         f"({self.manifest['mode']} host loop)",
                "kernels": k}
