"""int8 weights on x86 CPUs without VNNI: re-encoded as uint8, so the int8 kernels compute exactly.

ONNX Runtime and OpenVINO run a QDQ convolution or matmul with uint8
activations and int8 weights through the CPU's u8 x s8 multiply.  With VNNI
(AVX512-VNNI, AVX-VNNI, AMX) it accumulates in int32.  Without it, the
kernels use VPMADDUBSW, which adds each pair of u8 x s8 products into a
*saturating* int16: 2 x 255 x 127 does not fit, and outputs come out wrong by
several LSBs where a pair saturates (ONNX Runtime documents this as its u8s8
saturation issue).  On an AVX2-only host, greenpipe's DPU-numerics artifacts
then disagree with their fake-quant model, and a probe convolution over
full-range random integers came out wrong in 82 % of its outputs.

The remedy here is exact: every int8 weight initializer that DequantizeLinear
reads becomes ``q + 128`` in uint8 with its zero point raised by 128, so every
dequantized weight is the same number; the runtimes then take their u8 x u8
path, which widens to int16 before multiplying and cannot saturate.  The
artifact on disk keeps int8 weights (the fast path on VNNI hosts); the runners
re-encode it in memory when :func:`u8s8_saturates` says so, and their
``describe()`` says they did.
"""

from __future__ import annotations

import platform
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from greenpipe.runtime.base import cpu_flags

if TYPE_CHECKING:
    import onnx

# Any of these gives the CPU a u8 x s8 dot product that accumulates in int32 (no saturation).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
X86 = ("x86_64", "amd64", "i386", "i686")

NOTE = "int8 weights run as uint8: this x86 CPU has no VNNI, and u8 x s8 would saturate"


def u8s8_saturates(flags: set[str] | None = None, machine: str | None = None) -> bool:
    """Whether this CPU's u8 x s8 int8 kernels saturate: x86 without any of :data:`VNNI_FLAGS`."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    return machine in X86 and not set(VNNI_FLAGS) & flags


def uint8_weights(model: onnx.ModelProto) -> int:
    """Re-encode, in place, every int8 initializer read only by DequantizeLinear as uint8 (+128, zero
    point +128); returns how many were.  The dequantized values are unchanged."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    changed = 0
    for name, init in list(inits.items()):
        if init.data_type != onnx.TensorProto.INT8:
            continue
        nodes = readers.get(name, [])
        if not nodes or any(n.op_type != "DequantizeLinear" or n.input[0] != name for n in nodes):
            continue
        q = numpy_helper.to_array(init).astype(np.int16)
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array((q + 128).astype(np.uint8), name))
        for i, node in enumerate(nodes):
            zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
            zp = numpy_helper.to_array(inits[zp_name]).astype(np.int16) if zp_name else np.zeros((), np.int16)
            new_zp = f"{name}_u8_zero_point_{i}"
            graph.initializer.append(numpy_helper.from_array((zp + 128).astype(np.uint8), new_zp))
            inputs = list(node.input) + [""] * (3 - len(node.input))
            inputs[2] = new_zp
            del node.input[:]
            node.input.extend(inputs)
        changed += 1
    return changed


def for_this_host(path: Path) -> tuple[str | bytes, str | None]:
    """What a runner should load: ``path`` itself, or, where u8 x s8 saturates and the model has int8
    weights, the model re-encoded by :func:`uint8_weights` (serialized), with :data:`NOTE`."""
    if not u8s8_saturates():
        return str(path), None
    import onnx  # only here: a VNNI host (or a non-x86 one) loads the file as it is

    model = onnx.load(str(path))
    if not uint8_weights(model):
        return str(path), None
    return model.SerializeToString(), NOTE
