"""Rewrite a DPU-numerics QCDQ export into QDQ that ONNX Runtime runs in int8.

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
* int8 activations become uint8 (see :func:`_to_uint8`), which is what ORT's
  fastest x86 kernels take, with the DPU's saturation at 127 kept.
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
        new_dq = helper.make_node(
            "DequantizeLinear",
            [
                g.add_const(bias_dq.input[0] + "_i32", b32),
                g.add_const(bias_dq.input[0] + "_scale", np.array(acc_scale, np.float32)),
                g.add_const(bias_dq.input[0] + "_zp", np.array(0, np.int32)),
            ],
            [bias_dq.output[0] + "_i32"],
            name=(bias_dq.name or "bias") + "_i32",
        )
        g.graph.node.insert(list(g.graph.node).index(conv), new_dq)
        conv.input[2] = new_dq.output[0]
        count += 1
    return count, kept


_INT8_OPS = ("MaxPool", "Concat", "Resize")  # commute with a per-tensor dequant
_PASS_THROUGH = _INT8_OPS + ("Clip",)


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


def _to_uint8(g: _Graph) -> dict:
    """Re-express every int8 activation as uint8, exactly.

    * ``Relu -> Q_int8(s, 0)``: the result lies in [0, 127], so it becomes
      ``Q_uint8(s, 0) -> Clip(0, 127)`` and the Relu goes (a uint8 quantize
      with zero point 0 already clamps negatives to 0).  ORT then fuses the
      conv into a U8S8 ``QLinearConv``, its fastest x86 kernel.
    * any other ``Q_int8(s, 0)``: ``Q_uint8(s, 128)`` (q + 128, same range).
    Every DequantizeLinear of an activation takes the zero point of the
    quantize it reads from, through the integer-domain ops.
    """
    u8_zero = g.add_const("zp_u8_0", np.array(0, np.uint8))
    u8_mid = g.add_const("zp_u8_128", np.array(128, np.uint8))
    lo, hi = g.add_const("u8_lo", np.array(0, np.uint8)), g.add_const("u8_hi", np.array(127, np.uint8))
    new_zp: dict[str, str] = {}  # Q output -> its uint8 zero point
    stats = {"relu_absorbed": 0, "int8_to_uint8": 0}
    for q in [n for n in g.graph.node if n.op_type == "QuantizeLinear"]:
        sz = _scale_zp(g, q)
        if sz is None or sz[1] != 0 or g.const(q.input[2]).dtype != np.int8:
            continue
        relu = g.producer(q.input[0])
        if relu is not None and relu.op_type == "Relu" and len(g.consumers(relu.output[0])) == 1:
            q.input[0] = relu.input[0]
            q.input[2] = u8_zero
            out = q.output[0]
            q.output[0] = out + "_u8"
            clip = helper.make_node("Clip", [q.output[0], lo, hi], [out], name=q.name + "_sat127")
            g.graph.node.insert(list(g.graph.node).index(q) + 1, clip)
            g.graph.node.remove(relu)
            new_zp[out] = u8_zero
            stats["relu_absorbed"] += 1
        else:
            q.input[2] = u8_mid
            new_zp[q.output[0]] = u8_mid
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
    for dq in [n for n in g.graph.node if n.op_type == "DequantizeLinear"]:
        src = dq.input[0]
        while src not in new_zp:
            node = g.producer(src)
            if node is None or node.op_type not in _PASS_THROUGH:
                break
            src = node.input[0]
        if src in new_zp:
            dq.input[2] = new_zp[src]
    return stats


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
    """Return an ORT-fusible copy of a fixed-point QCDQ ``model`` and rewrite counts."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(model)
    stats = {
        "weight_clips_folded": _fold_weight_clips(g),
        "ops_moved_to_integers": _int8_domain(g),
    }
    # reads the int8 zero points, so before _to_uint8
    stats["bias_to_int32"], stats["bias_kept_float"] = _int32_bias(g)
    stats.update(_to_uint8(g))
    stats["dq_duplicated"] = _unique_dq_per_consumer(g)
    g.prune()
    onnx.checker.check_model(model)
    return model, stats
