"""Rewrite a quantized export into QDQ that ONNX Runtime runs in int8.

Brevitas exports fixed-point (power-of-two, per-tensor, symmetric int8) models
as Quantize/Clip/Dequantize chains around float ops.  That graph is exact but
ONNX Runtime only fuses ``DQ -> Conv -> Q`` groups into ``QLinearConv`` when
every Conv input is a DequantizeLinear of a plain int8/int32 initializer or
tensor.  The rewrites here are all *exact* (the deployed model computes the
same integers the fake-quant model does), so the artifact that runs is the
fixed-point model, only in a form ORT can execute with int8 kernels:

* weights: ``int8 const -> Clip -> DQ``  becomes ``clipped int8 const -> DQ``;
* bias: ``DQ(int8 b, s_b)`` becomes ``DQ(int32 b * s_b/(s_x*s_w), s_x*s_w)``,
  exact because all scales are powers of two (a DPU adds the bias shifted into
  the accumulator in the same way);
* ``DQ -> MaxPool/Resize(nearest)`` and ``DQ,DQ -> Concat`` (same scale) move
  the op onto the integers: they commute with a monotone per-tensor dequant;
  a Concat of inputs quantized differently that feeds a quantize gets that
  quantize on each input instead (:func:`_quantize_concat_inputs`);
* int8 activations become uint8 (see :func:`_to_uint8`), which is what ORT's
  fastest x86 kernels take, with the DPU's saturation at 127 kept; an integer
  Concat keeps one encoding for all its inputs.

A PT2E QDQ export (``inc``: uint8 activations, per-channel int8 weights,
float scales, float bias) needs three more, also exact:

* weights: ``float const -> Q -> Clip -> DQ`` becomes ``int8 const -> DQ``,
  the integers computed with PyTorch's quantize arithmetic (``x * (1/s)``,
  round half to even), i.e. the ones the fake-quant model uses;
* bias: a float bias that lies on its accumulator grid (``inc`` snaps it there,
  :func:`greenpipe.quant.inc.snap_bias_to_accumulator`) becomes
  ``DQ(int32 b/(s_x*s_w), s_x*s_w)`` per output channel;
* ``Relu -> Resize(nearest) -> Q`` gets the same ``Q -> DQ`` before the Resize
  (nearest copy commutes with quantizing), so the conv before it ends in a Q
  and fuses; a ``DQ -> Q`` pair with equal parameters left over is dropped.
"""

from __future__ import annotations


import numpy as np
import onnx
from onnx import helper, numpy_helper

class _Graph:
    """Small mutable view over an ONNX graph: producers, consumers, constants."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self._uid = 0

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def producer(self, tensor: str):
        for n in self.graph.node:
            if tensor in n.output:
                return n
        return None

    def consumers(self, tensor: str) -> list:
        return [n for n in self.graph.node if tensor in n.input]

    def add_const(self, stem: str, array: np.ndarray) -> str:
        self._uid += 1
        name = f"{stem}__gp{self._uid}"
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self.inits[name] = self.graph.initializer[-1]
        return name

    def prune(self) -> None:
        """Drop nodes and initializers nothing reads any more."""
        needed = {o.name for o in self.graph.output}
        keep = []
        for n in reversed(list(self.graph.node)):
            if any(o in needed for o in n.output):
                keep.append(n)
                needed.update(i for i in n.input if i)
        del self.graph.node[:]
        self.graph.node.extend(reversed(keep))
        inits = [i for i in self.graph.initializer if i.name in needed]
        del self.graph.initializer[:]
        self.graph.initializer.extend(inits)
        self.inits = {i.name: i for i in inits}


def _scale_zp(g: _Graph, node) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor Q/DQ node with constant parameters."""
    scale = g.const(node.input[1])
    zp = g.const(node.input[2]) if len(node.input) > 2 else np.zeros((), np.int8)
    if scale is None or zp is None or scale.size != 1:
        return None
    return float(scale.reshape(())), int(zp.reshape(()))


def _fold_weight_clips(g: _Graph) -> int:
    count = 0
    for clip in [n for n in g.graph.node if n.op_type == "Clip"]:
        data, lo, hi = (g.const(i) for i in clip.input[:3])
        if data is None or lo is None or hi is None:
            continue
        folded = g.add_const(clip.input[0], np.clip(data, lo, hi).astype(data.dtype))
        for c in g.consumers(clip.output[0]):
            c.input[:] = [folded if i == clip.output[0] else i for i in c.input]
        g.graph.node.remove(clip)
        count += 1
    return count


def _dq_scale_of(g: _Graph, tensor: str) -> float | None:
    node = g.producer(tensor)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    sz = _scale_zp(g, node)
    return None if sz is None or sz[1] != 0 else sz[0]


def _int32_bias(g: _Graph) -> tuple[int, int]:
    """Re-express each conv's int8 bias in accumulator units (int32); return (converted, rounded).

    Exact when the bias scale is no finer than the accumulator's (s_b >= s_x * s_w,
    the constraint a DPU's bias shift has too).  A bias that would need rounding
    (coarse activations, e.g. 4-bit) keeps its float dequantize instead: ORT
    then runs that one conv in float, exactly as the fake-quant model does, and
    the count is returned so the compile report shows it.
    """
    count = kept = 0
    for conv in [n for n in g.graph.node if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 2]:
        bias_dq = g.producer(conv.input[2])
        s_x, s_w = _dq_scale_of(g, conv.input[0]), _dq_scale_of(g, conv.input[1])
        if bias_dq is None or bias_dq.op_type != "DequantizeLinear" or s_x is None or s_w is None:
            continue
        b = g.const(bias_dq.input[0])
        sz = _scale_zp(g, bias_dq)
        if b is None or sz is None or b.dtype == np.int32:
            continue
        acc_scale = np.float32(s_x) * np.float32(s_w)
        ratio = float(np.float32(sz[0]) / acc_scale)
        exact = b.astype(np.float64) * ratio
        b32 = np.round(exact).astype(np.int32)
        if not np.array_equal(b32, exact):
            kept += 1
            continue
        _dequantize_bias(g, conv, bias_dq.input[0], b32, np.array(acc_scale, np.float32),
                         output=bias_dq.output[0] + "_i32", name=(bias_dq.name or "bias") + "_i32")
        count += 1
    return count, kept


def _dequantize_bias(g: _Graph, conv, const: str, ints: np.ndarray, scale: np.ndarray, output: str, name: str,
                     **attrs) -> None:
    """Feed ``conv`` its bias as ``DequantizeLinear(int32 ints, scale, 0)``, inserted just before it."""
    dq = helper.make_node(
        "DequantizeLinear",
        [g.add_const(const + "_i32", ints.astype(np.int32)),
         g.add_const(const + "_scale", scale),
         g.add_const(const + "_zp", np.zeros(scale.shape, np.int32))],
        [output],
        name=name,
        **attrs,
    )
    g.graph.node.insert(list(g.graph.node).index(conv), dq)
    conv.input[2] = dq.output[0]


def _fold_weight_quantize(g: _Graph) -> int:
    """``Q(float const)`` ==> the int8 constant, as torch's ``quantize_per_channel/tensor`` computes it."""
    count = 0
    for q in [n for n in g.graph.node if n.op_type == "QuantizeLinear"]:
        x, scale = g.const(q.input[0]), g.const(q.input[1])
        zp = g.const(q.input[2]) if len(q.input) > 2 else np.zeros((), np.uint8)
        if x is None or scale is None or zp is None or x.dtype != np.float32:
            continue
        shape = [1] * x.ndim
        if scale.size > 1:
            shape[_attr(q, "axis", 1) % x.ndim] = -1
        inv = (np.float32(1.0) / scale.astype(np.float32)).reshape(shape)
        info = np.iinfo(zp.dtype)
        ints = np.rint(x * inv) + zp.astype(np.float32).reshape(shape)
        folded = g.add_const(q.input[0] + "_q", np.clip(ints, info.min, info.max).astype(zp.dtype))
        for c in g.consumers(q.output[0]):
            c.input[:] = [folded if i == q.output[0] else i for i in c.input]
        g.graph.node.remove(q)
        count += 1
    return count


def _dq_scales(g: _Graph, tensor: str) -> np.ndarray | None:
    """float32 scale(s) of the DequantizeLinear producing ``tensor`` (per tensor or per channel)."""
    node = g.producer(tensor)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    scale = g.const(node.input[1])
    return None if scale is None else scale.astype(np.float32).ravel()


def _float_bias_to_int32(g: _Graph) -> tuple[int, int]:
    """Float conv biases on their accumulator grid ==> ``DQ(int32, s_x*s_w)``; return (converted, kept)."""
    count = kept = 0
    for conv in [n for n in g.graph.node if n.op_type == "Conv" and len(n.input) > 2]:
        b = g.const(conv.input[2])
        s_x, s_w = _dq_scales(g, conv.input[0]), _dq_scales(g, conv.input[1])
        if b is None or b.dtype != np.float32 or g.producer(conv.input[2]) is not None:
            continue  # no bias, or one that is already dequantized
        if s_x is None or s_w is None or s_x.size != 1:
            continue  # a float conv
        acc = (s_x * s_w).astype(np.float32)  # float32 products, as inc's snap forms them
        acc = np.broadcast_to(acc, b.shape).copy()
        ratio = b.astype(np.float64) / acc
        ints = np.rint(ratio)
        # On the grid to float32 precision (k * acc rounds to 24 bits), inside int32: else it stays float.
        if np.any(np.abs(ratio - ints) > 1e-3 + np.abs(ints) * 2.0**-22) or np.abs(ints).max() >= 2**31 - 1:
            kept += 1
            continue
        _dequantize_bias(g, conv, conv.input[2], ints, acc, output=conv.input[2] + "_dq",
                         name=f"{conv.name or conv.output[0]}/bias/DequantizeLinear", axis=0)
        count += 1
    return count, kept


def _quantize_before_resize(g: _Graph) -> int:
    """``x -> Resize(nearest) -> Q(s, z)`` ==> ``x -> Q(s, z) -> DQ -> Resize -> Q(s, z)`` (exact)."""
    count = 0
    for resize in [n for n in g.graph.node if n.op_type == "Resize"]:
        src = g.producer(resize.input[0])
        users = g.consumers(resize.output[0])
        if src is None or src.op_type == "DequantizeLinear" or _attr(resize, "mode", b"nearest") != b"nearest":
            continue
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or _scale_zp(g, users[0]) is None:
            continue
        q = users[0]
        stem = resize.input[0]
        new_q = helper.make_node("QuantizeLinear", [stem, *q.input[1:]], [stem + "_q"], name=f"{q.name}_pre")
        new_dq = helper.make_node("DequantizeLinear", [stem + "_q", *q.input[1:]], [stem + "_dq"],
                                  name=f"{q.name}_pre_dq")
        at = list(g.graph.node).index(resize)
        g.graph.node.insert(at, new_dq)
        g.graph.node.insert(at, new_q)
        resize.input[0] = new_dq.output[0]
        count += 1
    return count


def _drop_requantize(g: _Graph) -> int:
    """``DQ(s, z) -> Q(s, z)`` (same parameters and type) is the identity on the integers: drop it."""
    count = 0
    for q in [n for n in g.graph.node if n.op_type == "QuantizeLinear"]:
        dq = g.producer(q.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        a, b = _scale_zp(g, dq), _scale_zp(g, q)
        if a is None or a != b or g.const(dq.input[2]).dtype != g.const(q.input[2]).dtype:
            continue
        users = g.consumers(q.output[0])
        if any(c.op_type != "DequantizeLinear" for c in users):
            continue  # e.g. a narrow Brevitas quantizer's Clip, which _to_uint8 moves with its Q
        for c in users:
            c.input[:] = [dq.input[0] if i == q.output[0] else i for i in c.input]
        g.graph.node.remove(q)
        count += 1
    return count


_INT8_OPS = ("MaxPool", "Concat", "Resize")  # commute with a per-tensor dequant
_PASS_THROUGH = _INT8_OPS + ("Clip",)


def _quantize_concat_inputs(g: _Graph) -> int:
    """``DQ_i(s_i, z_i) -> Concat -> Q(s, z)`` with unequal ``(s_i, z_i)`` ==> ``Concat(Q(s, z)(DQ_i))`` (exact).

    Quantizing is elementwise, so quantizing each input and concatenating the
    integers is the same as quantizing the concatenation: the Concat then runs
    on one encoding, each input requantized to the output's.  A Concat whose
    inputs differ and that feeds no single quantize stays in float.
    """
    count = 0
    for concat in [n for n in g.graph.node if n.op_type == "Concat"]:
        dqs = [g.producer(i) for i in concat.input]
        if any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
            continue
        params = {_scale_zp(g, d) for d in dqs}
        users = g.consumers(concat.output[0])
        if len(params) == 1 or None in params or concat.output[0] in {o.name for o in g.graph.output}:
            continue
        if len(users) != 1 or users[0].op_type != "QuantizeLinear" or _scale_zp(g, users[0]) is None:
            continue
        q = users[0]
        at = list(g.graph.node).index(concat)
        for k, name in enumerate(list(concat.input)):
            pre = helper.make_node("QuantizeLinear", [name, *q.input[1:]], [f"{name}_to_{q.output[0]}"],
                                   name=f"{q.name or q.output[0]}_in{k}")
            g.graph.node.insert(at, pre)
            at += 1
            concat.input[k] = pre.output[0]
        concat.output[0] = q.output[0]
        g.graph.node.remove(q)
        count += 1
    return count


def _int8_domain(g: _Graph) -> int:
    """``DQ -> MaxPool/Resize`` and ``DQ,DQ -> Concat`` (same scale) ==> op on integers -> DQ."""
    count = 0
    for op in [n for n in g.graph.node if n.op_type in _INT8_OPS]:
        data_inputs = [op.input[0]] if op.op_type != "Concat" else list(op.input)
        dqs = [g.producer(i) for i in data_inputs]
        if any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
            continue
        params = {_scale_zp(g, d) for d in dqs}
        if len(params) != 1 or None in params:
            continue
        if op.op_type == "Resize" and _attr(op, "mode", b"nearest") != b"nearest":
            continue
        out = op.output[0]
        for k, d in enumerate(dqs):
            op.input[k] = d.input[0]
        op.output[0] = out + "_q"
        new_dq = helper.make_node("DequantizeLinear", [op.output[0], *dqs[0].input[1:]], [out], name=op.name + "_dq")
        g.graph.node.insert(list(g.graph.node).index(op) + 1, new_dq)
        count += 1
    return count


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _quantized_sources(g: _Graph, tensor: str, quantized: dict[str, str]) -> list[str] | None:
    """The quantize outputs (keys of ``quantized``) whose integers reach ``tensor`` through integer-domain ops.

    None when some path leaves the integer domain.  A Concat reads all its inputs, the others their first.
    """
    if tensor in quantized:
        return [tensor]
    node = g.producer(tensor)
    if node is None or node.op_type not in _PASS_THROUGH:
        return None
    sources: list[str] = []
    for name in node.input if node.op_type == "Concat" else node.input[:1]:
        found = _quantized_sources(g, name, quantized)
        if found is None:
            return None
        sources += found
    return sources


def _to_uint8(g: _Graph) -> dict:
    """Re-express every int8 activation as uint8, exactly.

    * ``Relu -> Q_int8(s, 0)``: the result lies in [0, 127], so it becomes
      ``Q_uint8(s, 0) -> Clip(0, 127)`` and the Relu goes (a uint8 quantize
      with zero point 0 already clamps negatives to 0).  ORT then fuses the
      conv into a U8S8 ``QLinearConv``, its fastest x86 kernel.
    * ``DQ -> Q_int8(s, 0)`` (a requantize) of integers that are all such
      non-negative ones: the same, since its input is non-negative too.
    * any other ``Q_int8(s, 0)``: ``Q_uint8(s, 128)`` (q + 128, same range).
    Every DequantizeLinear of an activation takes the zero point of the
    quantize it reads from, through the integer-domain ops.  A Concat on the
    integers with inputs of both zero points gets ``DQ(s, 0) -> Q(s, 128)``
    on its zero-point-0 inputs, so it joins one encoding.
    """
    u8_zero = g.add_const("zp_u8_0", np.array(0, np.uint8))
    u8_mid = g.add_const("zp_u8_128", np.array(128, np.uint8))
    lo, hi = g.add_const("u8_lo", np.array(0, np.uint8)), g.add_const("u8_hi", np.array(127, np.uint8))
    new_zp: dict[str, str] = {}  # Q output -> its uint8 zero point
    scale_of: dict[str, str] = {}  # Q output -> its scale
    stats = {"relu_absorbed": 0, "nonnegative_to_uint8": 0, "int8_to_uint8": 0}
    for q in [n for n in g.graph.node if n.op_type == "QuantizeLinear"]:
        sz = _scale_zp(g, q)
        if sz is None or sz[1] != 0 or g.const(q.input[2]).dtype != np.int8:
            continue
        out = q.output[0]
        scale_of[out] = q.input[1]
        src = g.producer(q.input[0])
        relu = src is not None and src.op_type == "Relu" and len(g.consumers(src.output[0])) == 1
        requantized = src is not None and src.op_type == "DequantizeLinear"
        sources = _quantized_sources(g, src.input[0], new_zp) if requantized else None
        if relu or (sources and all(new_zp[t] == u8_zero for t in sources)):
            if relu:
                q.input[0] = src.input[0]
                g.graph.node.remove(src)
            q.input[2] = u8_zero
            q.output[0] = out + "_u8"
            clip = helper.make_node("Clip", [q.output[0], lo, hi], [out], name=q.name + "_sat127")
            g.graph.node.insert(list(g.graph.node).index(q) + 1, clip)
            new_zp[out] = u8_zero
            stats["relu_absorbed" if relu else "nonnegative_to_uint8"] += 1
        else:
            q.input[2] = u8_mid
            new_zp[out] = u8_mid
            stats["int8_to_uint8"] += 1
    # Fewer than 8 activation bits export as Q_int8 -> Clip(int8 lo, hi): move those bounds to uint8 too
    # (shifted like the values; a lower bound below a zero-point-0 quantize's range is already met).
    for out, zp in new_zp.items():
        shift = 0 if zp == u8_zero else 128
        for clip in [c for c in g.consumers(out) if c.op_type == "Clip" and len(c.input) == 3]:
            bounds = [g.const(i) for i in clip.input[1:]]
            if any(b is None or b.dtype != np.int8 for b in bounds):
                continue
            clip.input[1:] = [
                g.add_const(f"{clip.name}_u8_{k}", np.array(np.clip(int(b) + shift, 0, 255), np.uint8))
                for k, b in enumerate(bounds)
            ]
            stats["clips_to_uint8"] = stats.get("clips_to_uint8", 0) + 1
    stats["concat_inputs_shifted"] = _one_zero_point_per_concat(g, new_zp, scale_of, u8_zero, u8_mid)
    for dq in [n for n in g.graph.node if n.op_type == "DequantizeLinear"]:
        sources = _quantized_sources(g, dq.input[0], new_zp)
        if sources and len({new_zp[t] for t in sources}) == 1:
            dq.input[2] = new_zp[sources[0]]
    return stats


def _one_zero_point_per_concat(g: _Graph, new_zp: dict[str, str], scale_of: dict[str, str], zero: str,
                               mid: str) -> int:
    """Shift the zero-point-0 inputs of an integer Concat that also has zero-point-128 ones; return how many.

    All its inputs share one scale (the Concat was moved onto the integers
    only then); a zero-point-0 input lies in [0, 127], so ``DQ(s, 0) ->
    Q(s, 128)`` re-encodes it exactly.  Concats are visited in graph order, so
    a nested one is already on one encoding when its consumer is.
    """
    count = 0
    for concat in [n for n in g.graph.node if n.op_type == "Concat"]:
        per_input = [_quantized_sources(g, name, new_zp) for name in concat.input]
        if any(not s for s in per_input) or len({new_zp[t] for s in per_input for t in s}) == 1:
            continue
        at = list(g.graph.node).index(concat)
        for k, sources in enumerate(per_input):
            if new_zp[sources[0]] != zero:
                continue
            name, scale = concat.input[k], scale_of[sources[0]]
            dq = helper.make_node("DequantizeLinear", [name, scale, zero], [f"{name}_zp0"], name=f"{name}_zp0")
            q = helper.make_node("QuantizeLinear", [dq.output[0], scale, mid], [f"{name}_zp128"],
                                 name=f"{name}_zp128")
            g.graph.node.insert(at, q)
            g.graph.node.insert(at, dq)
            at += 2
            concat.input[k] = q.output[0]
            new_zp[q.output[0]] = mid
            count += 1
    return count


def _unique_dq_per_consumer(g: _Graph) -> int:
    """Give every consumer of a DequantizeLinear its own copy (ORT fuses a DQ into one node only)."""
    count = 0
    for dq in [n for n in g.graph.node if n.op_type == "DequantizeLinear"]:
        users = g.consumers(dq.output[0])
        for k, user in enumerate(users[1:], start=1):
            copy = helper.make_node("DequantizeLinear", list(dq.input), [f"{dq.output[0]}_{k}"], name=f"{dq.name}_{k}")
            g.graph.node.insert(list(g.graph.node).index(dq) + 1, copy)
            user.input[:] = [copy.output[0] if i == dq.output[0] else i for i in user.input]
            count += 1
    return count


def to_ort_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """Return an ORT-fusible copy of a quantized ``model`` (QCDQ or PT2E QDQ) and rewrite counts."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(model)
    stats = {"weights_quantized": _fold_weight_quantize(g)}  # before anything reads Q nodes as activations
    stats["weight_clips_folded"] = _fold_weight_clips(g)
    stats["quantize_before_resize"] = _quantize_before_resize(g)
    stats["concat_quantized_per_input"] = _quantize_concat_inputs(g)
    stats["ops_moved_to_integers"] = _int8_domain(g)
    stats["requantize_dropped"] = _drop_requantize(g)
    # reads the int8 zero points, so before _to_uint8
    stats["bias_to_int32"], stats["bias_kept_float"] = _int32_bias(g)
    converted, kept = _float_bias_to_int32(g)
    stats["bias_to_int32"] += converted
    stats["bias_kept_float"] += kept
    stats.update(_to_uint8(g))
    stats["dq_duplicated"] = _unique_dq_per_consumer(g)
    g.prune()
    onnx.checker.check_model(model)
    return model, stats
