"""Per-layer DPU readiness: which layers of an ONNX model a Xilinx DPU would run, without Vitis AI.

Walks an exported ONNX graph (the quantize stage's QCDQ export or a float
export; quantize/dequantize nodes are looked through) and checks every layer
against the documented operator limits of one DPU architecture.  A layer the
DPU cannot run is assigned to the CPU by the Vitis AI compiler and splits the
model into several DPU subgraphs; this report predicts that split before the
compiler (or a board) is at hand, so "too many subgraphs" shows up at compile
time, not on the board.

Run it on any ONNX file::

    python -m greenpipe.compile.dpu_readiness model.onnx --arch DPUCZDX8G
    python -m greenpipe.compile.dpu_readiness model.onnx --arch infra/arch/DPUCVDX8H/VCK50008PE/arch.json \
        --json readiness.json --md readiness.md

The limits are data (:data:`ARCHS`, one :class:`ArchLimits` per DPU
configuration), taken from:

* AMD Vitis AI User Guide UG1414 (v3.5, 2023-09-28), "Currently Supported
  Operators" table (docs.amd.com/r/en-US/ug1414-vitis-ai/Currently-Supported-Operators)
  and "Operators Supported by PyTorch / TensorFlow" (which framework ops map
  to DPU engines and which are CPU-only: sigmoid, tanh, softmax, exp);
* PG338, DPUCZDX8G Product Guide (v4.0): channel parallelism per
  architecture (B4096: 16, B2304: 12);
* PG403, DPUCVDX8H Product Guide (v1.0/1.1), "DPUCVDX8H Feature Support":
  channel_parallel 64, bank_depth 256, pooling kernel sizes {1, 2, 3, 7} with
  W == H on the 8PE configuration, depthwise engine only in the DWC builds.

Where a limit could not be confirmed from those documents the table says so
(``unconfirmed``) and the check is either conservative or skipped, as noted
per entry; every layer's ``reason`` names the limit it was judged by.  The
prediction is the documented rules, not the compiler: ``vai_c_xir`` has the
last word (it also weighs on-chip memory and the quantized model's scales).

Subgraphs: each DPU-run layer gets a *CPU depth*, the largest number of
CPU-run layers on any path from the model inputs to it; DPU layers that are
connected and share a CPU depth form one DPU subgraph.  In that split every
subgraph runs start to finish without waiting for a CPU layer in between,
which XIR's partitioning needs; the compiler may split further, not less.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx
from onnx import numpy_helper

from greenpipe.errors import GreenpipeError

# An allowed-values spec: an inclusive range (lo, hi) or an explicit set of values.
Allowed = tuple[int, int] | frozenset

LEAKY_ALPHA = 26 / 256  # the only LeakyReLU slope the DPU computes; vai_q maps 0.1 onto it
LEAKY_TOLERANCE = 0.002  # accepts 0.1 (what users write) and 26/256 (what the quantizer writes)


@dataclass(frozen=True)
class ArchLimits:
    """The documented operator limits of one DPU configuration (units: pixels, channels, bank words)."""

    name: str  # Vitis AI target name, e.g. DPUCZDX8G_ISA1_B4096
    family: str  # DPUCZDX8G, DPUCVDX8H
    boards: str
    fingerprint: str | None  # as Vitis AI 3.5's target registry lists it; None where not confirmed
    channel_parallel: int  # input = output channel parallelism of the conv engine
    bank_depth: int  # words per on-chip bank: bounds kernel_w * kernel_h * ceil(ic / cp)
    conv_kernel: Allowed  # kernel_w and kernel_h each
    conv_stride: Allowed
    conv_activations: frozenset  # fused into conv2d / transposed-conv2d / fully connected
    depthwise_kernel: Allowed | None  # None: this configuration has no depthwise engine
    depthwise_stride: Allowed | None
    depthwise_bank_depth: int
    depthwise_activations: frozenset
    tconv_kernel_over_stride: Allowed  # transposed conv: kernel / stride each
    pool_kernel: Allowed  # max and average pooling, kernel_w and kernel_h each
    pool_square: bool  # kernel_w == kernel_h required
    pool_stride: Allowed | None  # None: not confirmed, not checked
    pool_activations: frozenset
    eltwise: frozenset  # element-wise types: "add", "mul"
    eltwise_activations: frozenset
    resize_modes: frozenset  # "nearest" (integer scale), "linear" (scale 2 or 4)
    sources: tuple[str, ...]
    unconfirmed: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return sorted(v) if isinstance(v, frozenset) else v

        return {k: plain(v) for k, v in asdict(self).items()}


_ACTS_FULL = frozenset({"relu", "relu6", "leaky_relu", "hard_sigmoid", "hard_swish"})
_UG1414 = "UG1414 v3.5 'Currently Supported Operators'"

DPUCZDX8G_B4096 = ArchLimits(
    name="DPUCZDX8G_ISA1_B4096",
    family="DPUCZDX8G",
    boards="ZCU102, ZCU104, KV260",
    fingerprint="0x101000056010407",
    channel_parallel=16,
    bank_depth=2048,
    conv_kernel=(1, 16),
    conv_stride=(1, 8),
    conv_activations=_ACTS_FULL,
    depthwise_kernel=(1, 256),
    depthwise_stride=(1, 256),
    depthwise_bank_depth=2048,
    depthwise_activations=frozenset({"relu", "relu6"}),
    tconv_kernel_over_stride=(1, 16),
    pool_kernel=(1, 256),
    pool_square=False,
    pool_stride=(1, 256),
    pool_activations=frozenset({"relu", "relu6"}),
    eltwise=frozenset({"add", "mul"}),
    eltwise_activations=frozenset({"relu"}),
    resize_modes=frozenset({"nearest", "linear"}),
    sources=(f"{_UG1414}, column DPUCZDX8G_ISA1_B4096 (ZCU102, ZCU104)", "PG338 v4.0 architecture table"),
    unconfirmed=(
        (
            "pool_kernel/pool_stride [1, 256] and pool_activations: read from a summary of UG1414 v3.5, "
            "not from the table itself"
        ),
        (
            "depthwise_activations: UG1414 v3.5 may also list LeakyReLU/Hard-Swish/Hard-Sigmoid; "
            "the conservative ReLU/ReLU6 of earlier releases is used"
        ),
    ),
)

# The same DPU IP in its B2304 size: only the channel parallelism differs.
DPUCZDX8G_B2304 = replace(
    DPUCZDX8G_B4096,
    name="DPUCZDX8G_ISA1_B2304",
    boards="Ultra96-V2 (the B2304 build of its board image)",
    fingerprint="0x101000056010405",
    channel_parallel=12,  # PG338: B2304 = 8 pixels x 12 input x 12 output channels
    sources=(
        f"{_UG1414}, column DPUCZDX8G_ISA1_B4096 (same DPU IP)",
        "PG338 v4.0 architecture table (B2304: ICP = OCP = 12)",
    ),
    unconfirmed=(
        *DPUCZDX8G_B4096.unconfirmed,
        "bank_depth 2048 assumed equal to B4096's (UG1414 lists only B4096)",
    ),
)

DPUCVDX8H_8PE = ArchLimits(
    name="DPUCVDX8H_ISA1_F2W2_8PE",
    family="DPUCVDX8H",
    boards="VCK5000 (8PE xclbin)",
    fingerprint="0x501000000140fee",
    channel_parallel=64,
    bank_depth=256,
    conv_kernel=(1, 16),
    conv_stride=(1, 4),
    conv_activations=_ACTS_FULL,
    depthwise_kernel=None,  # the depthwise engine is in the 6PE DWC build only
    depthwise_stride=None,
    depthwise_bank_depth=256,
    depthwise_activations=frozenset(),
    tconv_kernel_over_stride=(1, 16),
    pool_kernel=frozenset({1, 2, 3, 7}),
    pool_square=True,
    pool_stride=None,
    pool_activations=frozenset({"relu"}),
    eltwise=frozenset({"add"}),
    eltwise_activations=frozenset({"relu"}),
    resize_modes=frozenset({"nearest", "linear"}),
    sources=(
        (
            "PG403 v1.0 'DPUCVDX8H Feature Support' (channel_parallel 64, bank_depth 256; "
            "pooling 8PE: W, H in {1, 2, 3, 7}, W == H)"
        ),
        f"{_UG1414}, column DPUCVDX8H (conv2d limits)",
    ),
    unconfirmed=(
        "pool_stride: PG403's stride row was not retrieved; pooling strides are not checked",
        (
            "pool_activations, eltwise 'mul', eltwise_activations: not confirmed for DPUCVDX8H; "
            "only ReLU after pooling / add is accepted and element-wise multiply is reported as CPU"
        ),
        (
            "depthwise: PG403 marks it as specific to the DWC builds (F2W4_6PE_aieDWC); "
            "the 8PE build is taken to have none"
        ),
    ),
)

ARCHS: dict[str, ArchLimits] = {a.name: a for a in (DPUCZDX8G_B4096, DPUCZDX8G_B2304, DPUCVDX8H_8PE)}
# A family name alone means the configuration greenpipe deploys to: ZCU104's B4096, VCK5000's 8PE.
ALIASES = {"DPUCZDX8G": DPUCZDX8G_B4096.name, "DPUCVDX8H": DPUCVDX8H_8PE.name}


def resolve_arch(arch: str | Path) -> ArchLimits:
    """The limits for ``arch``: a target or family name, or an arch.json ({"target": ...} or a fingerprint)."""
    text = str(arch)
    if text.endswith(".json"):
        path = Path(text)
        try:
            content = json.loads(path.read_text())
        except FileNotFoundError:
            raise GreenpipeError(
                f"{path}: no such DPU arch file; use one under infra/arch/ or the one your board image ships"
            ) from None
        except json.JSONDecodeError as exc:
            raise GreenpipeError(
                f'{path}: not valid JSON ({exc}); an arch.json holds {{"target": ...}}'
            ) from None
        if "target" in content:
            text = str(content["target"])
        elif "fingerprint" in content:
            by_fp = {a.fingerprint.lower(): a.name for a in ARCHS.values() if a.fingerprint}
            fp = str(content["fingerprint"]).lower()
            if fp not in by_fp:
                raise GreenpipeError(
                    f"{path}: fingerprint {content['fingerprint']} is not one greenpipe has limits for "
                    f"({', '.join(sorted(by_fp))}); give --arch a target name instead"
                )
            text = by_fp[fp]
        else:
            raise GreenpipeError(f"{path}: no 'target' or 'fingerprint' key; not a DPU arch.json")
    name = ALIASES.get(text.upper(), text)
    if name not in ARCHS:
        known = ", ".join([*ARCHS, *ALIASES])
        raise GreenpipeError(
            f"DPU architecture {text!r}: greenpipe has no operator limits for it; known: {known}"
        )
    return ARCHS[name]


# ---------------------------------------------------------------- the graph


_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear"}
_PASS_THROUGH = {"Identity", "Dropout"}
# Ops the compiler folds into neighbouring layers or load/save instructions.
_FOLDED = {
    "BatchNormalization": "folded into the preceding conv (or a depthwise conv) by the compiler",
    "Reshape": "reshape: folded into the DPU's load/save instructions",
    "Flatten": "flatten: folded into the DPU's load/save instructions",
    "Squeeze": "squeeze: folded into the DPU's load/save instructions",
    "Unsqueeze": "unsqueeze: folded into the DPU's load/save instructions",
}
_CPU_ONLY = {
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softmax": "softmax",
    "LogSoftmax": "log-softmax",
    "Exp": "exp",
    "Gelu": "GELU",
    "Erf": "erf (GELU)",
    "Elu": "ELU",
    "Selu": "SELU",
    "Mish": "mish",
    "Softplus": "softplus",
    "PRelu": "PReLU",
}


@dataclass
class Layer:
    index: int
    name: str
    op: str
    attrs: dict[str, Any]
    inputs: list[int]  # indices of the layers producing its activation inputs (-1 = a model input)
    data_inputs: int  # how many of its operands are activations (the rest are constants)
    engine: str = ""
    verdict: str = ""  # "dpu" or "cpu"
    reason: str = ""
    subgraph: int | None = None
    cpu_depth: int = 0


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, (list, tuple)):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        if isinstance(v, (int, float, str, list)):
            out[a.name] = v
    return out


def _fmt(spec: Allowed) -> str:
    if isinstance(spec, frozenset):
        return "{" + ", ".join(str(v) for v in sorted(spec)) + "}"
    return f"[{spec[0]}, {spec[1]}]"


def _ok(spec: Allowed, value: float) -> bool:
    if isinstance(spec, frozenset):
        return value in spec
    return spec[0] <= value <= spec[1]


class _Graph:
    """Tensor shapes, constants and producers of an ONNX graph, with quantize/dequantize looked through."""

    def __init__(self, model: onnx.ModelProto):
        # Shape inference is a help (channel counts), not a requirement: a graph it chokes on is still walked.
        with contextlib.suppress(Exception):
            model = onnx.shape_inference.infer_shapes(model)
        g = model.graph
        self.nodes = list(g.node)
        self.inits = {i.name: i for i in g.initializer}
        self.shapes: dict[str, list[int | None]] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        for name, init in self.inits.items():
            self.shapes[name] = list(init.dims)
        self.consts: dict[str, Any] = {name: numpy_helper.to_array(t) for name, t in self.inits.items()}
        self.producer: dict[str, onnx.NodeProto] = {}
        for n in self.nodes:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        arr = numpy_helper.to_array(a.t)
                        self.consts[n.output[0]] = arr
                        self.shapes[n.output[0]] = list(arr.shape)
            for out in n.output:
                self.producer[out] = n
        self.model_inputs = [i.name for i in g.input if i.name not in self.inits]
        self.activations = self._activation_tensors()

    def _activation_tensors(self) -> set[str]:
        """Tensors computed from the model inputs (not weights, not shape arithmetic)."""
        acts = set(self.model_inputs)
        for n in self.nodes:  # ONNX graphs are topologically sorted
            if n.op_type in ("Shape", "Size"):
                continue
            if any(i in acts for i in n.input if i):
                acts.update(n.output)
        return acts

    def const(self, name: str) -> Any:
        """The constant value of ``name``, looking through quantize/dequantize/clip of a constant."""
        if name in self.consts:
            return self.consts[name]
        n = self.producer.get(name)
        if n is not None and n.op_type in (_QUANT_OPS | {"Clip"} | _PASS_THROUGH):
            return self.const(n.input[0])
        return None

    def is_transparent(self, n: onnx.NodeProto) -> bool:
        """Quantize/dequantize (the DPU's fix ops, fused), integer clips after a quantize, identities."""
        if n.op_type in _QUANT_OPS or n.op_type in _PASS_THROUGH:
            return True
        if n.op_type == "Clip":
            p = self.producer.get(n.input[0])
            return p is not None and p.op_type == "QuantizeLinear"
        return False


def _layers(graph: _Graph) -> list[Layer]:
    """Every node on the activation path that is a layer, with its producers (through transparent nodes)."""
    layers: list[Layer] = []
    tensor_layer: dict[str, int] = {name: -1 for name in graph.model_inputs}
    for n in graph.nodes:
        data_inputs = [i for i in n.input if i and i in graph.activations]
        if not data_inputs or n.op_type in ("Shape", "Size", "Constant"):
            continue
        if graph.is_transparent(n):
            for out in n.output:
                tensor_layer[out] = tensor_layer.get(n.input[0], -1)
            continue
        inputs = sorted({tensor_layer.get(i, -1) for i in data_inputs})
        layer = Layer(len(layers), n.name or n.output[0], n.op_type, _attrs(n), inputs, len(data_inputs))
        layer.attrs.update(_shape_attrs(graph, n))
        layers.append(layer)
        for out in n.output:
            tensor_layer[out] = layer.index
    return layers


def _shape_attrs(graph: _Graph, n: onnx.NodeProto) -> dict[str, Any]:
    """Channel counts and constant operands the checks need, as layer attributes."""
    out: dict[str, Any] = {}
    if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1:
        w = graph.shapes.get(n.input[1])
        if w is None and graph.const(n.input[1]) is not None:
            w = list(graph.const(n.input[1]).shape)
        if w and len(w) == 4:
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if n.op_type == "Conv":
                out["out_channels"], out["in_channels"] = w[0], w[1] * group
            else:
                out["in_channels"], out["out_channels"] = w[0], w[1] * group
            out.setdefault("kernel_shape", w[2:])
    if n.op_type in ("Resize", "Upsample"):
        scales_input = 2 if n.op_type == "Resize" else 1
        if len(n.input) > scales_input and n.input[scales_input]:
            scales = graph.const(n.input[scales_input])
            if scales is not None and scales.size:
                out["scales"] = [float(s) for s in scales.ravel()]
    if n.op_type == "Clip":
        for key, pos in (("min", 1), ("max", 2)):
            if len(n.input) > pos and n.input[pos]:
                v = graph.const(n.input[pos])
                if v is not None:
                    out[key] = float(v)
    x = graph.shapes.get(n.input[0])
    if x:
        out["input_shape"] = x
    return out


# ---------------------------------------------------------------- the checks


def _activation_kind(layer: Layer) -> tuple[str | None, str]:
    """(DPU activation name or None, why) for an activation layer."""
    op, a = layer.op, layer.attrs
    if op == "Relu":
        return "relu", "ReLU"
    if op == "Clip":
        lo, hi = a.get("min", -math.inf), a.get("max", math.inf)
        if lo == 0 and hi == 6:
            return "relu6", "Clip(0, 6) = ReLU6"
        if lo == 0 and hi == math.inf:
            return "relu", "Clip(0, inf) = ReLU"
        return None, f"Clip({lo}, {hi}) is not ReLU/ReLU6 (the DPU has no general clip)"
    if op == "LeakyRelu":
        alpha = float(a.get("alpha", 0.01))
        if abs(alpha - LEAKY_ALPHA) <= LEAKY_TOLERANCE:
            return "leaky_relu", f"LeakyReLU alpha {alpha:g} (~26/256)"
        return None, f"LeakyReLU alpha {alpha:g}: the DPU computes only alpha = 26/256 (use 0.1)"
    if op == "HardSigmoid":
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        if abs(alpha - 1 / 6) < 1e-3 and abs(beta - 0.5) < 1e-6:
            return "hard_sigmoid", "hard-sigmoid (relu6(x + 3) / 6)"
        return (
            None,
            f"HardSigmoid alpha {alpha:g} beta {beta:g}: the DPU's is alpha 1/6, beta 0.5 (PyTorch's)",
        )
    if op == "HardSwish":
        return "hard_swish", "hard-swish"
    return None, op


_ACTIVATION_OPS = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish"}


def _check_conv(layer: Layer, arch: ArchLimits) -> tuple[str, list[str]]:
    a, cp = layer.attrs, arch.channel_parallel
    k = list(a.get("kernel_shape", []))
    if len(k) != 2:
        return "conv", [f"{len(k)}-D convolution: only 2-D convolutions are covered by these limits"]
    kh, kw = k
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pads = a.get("pads", [0, 0, 0, 0])
    group = int(a.get("group", 1))
    ic, oc = a.get("in_channels"), a.get("out_channels")
    problems: list[str] = []
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        problems.append(f"auto_pad {a['auto_pad']}")
    if group != 1 and not (ic is not None and group == ic and oc == ic):
        return "conv", [
            f"group {group}: the DPU runs group 1 (conv) or group = in = out channels (depthwise)"
        ]
    depthwise = group != 1
    if depthwise:
        engine = "depthwise-conv2d"
        if arch.depthwise_kernel is None:
            return engine, [f"depthwise conv: {arch.name} has no depthwise engine"]
        kernel, stride, depth = arch.depthwise_kernel, arch.depthwise_stride, arch.depthwise_bank_depth
    else:
        engine = "conv2d"
        kernel, stride, depth = arch.conv_kernel, arch.conv_stride, arch.bank_depth
    if not (_ok(kernel, kw) and _ok(kernel, kh)):
        problems.append(f"kernel {kh}x{kw} outside w, h {_fmt(kernel)}")
    if stride is not None and not (_ok(stride, sw) and _ok(stride, sh)):
        problems.append(f"stride {sh}x{sw} outside w, h {_fmt(stride)}")
    if len(pads) == 4:
        top, left, bottom, right = pads
        if not (0 <= left <= (kw - 1) * dw and 0 <= right <= (kw - 1) * dw):
            problems.append(
                f"pad left/right {left}/{right} outside [0, (kernel_w - 1) * dilation_w = {(kw - 1) * dw}]"
            )
        if not (0 <= top <= (kh - 1) * dh and 0 <= bottom <= (kh - 1) * dh):
            problems.append(
                f"pad top/bottom {top}/{bottom} outside [0, (kernel_h - 1) * dilation_h = {(kh - 1) * dh}]"
            )
    if ic is not None:
        words = kw * kh * math.ceil(ic / cp)
        if words > depth:
            problems.append(
                f"kernel_w * kernel_h * ceil(in_channels / {cp}) = {words} > bank_depth {depth} "
                f"(in_channels {ic})"
            )
        if max(dh, dw) > 1 and max(dh, dw) * ic > 256 * cp:
            problems.append(f"dilation {max(dh, dw)} * in_channels {ic} > 256 * {cp}")
    if oc is not None and oc > 256 * cp:
        problems.append(f"out_channels {oc} > 256 * channel_parallel = {256 * cp}")
    return engine, problems


def _check_conv_transpose(layer: Layer, arch: ArchLimits) -> tuple[str, list[str]]:
    a = layer.attrs
    k = list(a.get("kernel_shape", []))
    s = list(a.get("strides", [1] * len(k)))
    if len(k) != 2:
        return "transposed-conv2d", [f"{len(k)}-D transposed convolution is not covered"]
    problems = []
    if any(p != 0 for p in a.get("output_padding", [])):
        problems.append("output_padding != 0 (assigned to the CPU by the Vitis AI compiler)")
    if int(a.get("group", 1)) != 1:
        problems.append("grouped transposed conv: only group 1 is covered by these limits")
    ratios = [ki / si for ki, si in zip(k, s)]
    if not all(_ok(arch.tconv_kernel_over_stride, r) for r in ratios):
        problems.append(f"kernel/stride {ratios} outside {_fmt(arch.tconv_kernel_over_stride)}")
    return "transposed-conv2d", problems


def _check_pool(layer: Layer, arch: ArchLimits) -> tuple[str, list[str]]:
    a = layer.attrs
    engine = "maxpool2d" if "Max" in layer.op else "avgpool2d"
    if layer.op.startswith("Global"):
        shape = a.get("input_shape") or []
        hw = shape[2:4] if len(shape) == 4 else []
        if len(hw) != 2 or None in hw:
            return engine, []  # kernel = input size, unknown with dynamic H, W: checked by the compiler
        k = hw
        s = None
    else:
        k = list(a.get("kernel_shape", []))
        s = list(a.get("strides", [1] * len(k)))
    problems = []
    if len(k) != 2:
        return engine, [f"{len(k)}-D pooling is not covered"]
    if not all(_ok(arch.pool_kernel, v) for v in k):
        problems.append(f"kernel {k[0]}x{k[1]} outside w, h {_fmt(arch.pool_kernel)}")
    if arch.pool_square and k[0] != k[1]:
        problems.append(f"kernel {k[0]}x{k[1]}: {arch.name} pools with kernel_w == kernel_h only")
    if s is not None and arch.pool_stride is not None and not all(_ok(arch.pool_stride, v) for v in s):
        problems.append(f"stride {s[0]}x{s[1]} outside {_fmt(arch.pool_stride)}")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        problems.append("dilated pooling")
    return engine, problems


def _check(layer: Layer, arch: ArchLimits, layers: list[Layer]) -> tuple[str, list[str], str]:
    """(engine, problems, how it maps when fine) for one layer."""
    op, a = layer.op, layer.attrs
    if op == "Conv":
        engine, problems = _check_conv(layer, arch)
        return engine, problems, f"{engine} {a.get('kernel_shape')} stride {a.get('strides', [1, 1])}"
    if op == "ConvTranspose":
        engine, problems = _check_conv_transpose(layer, arch)
        return engine, problems, "transposed-conv2d"
    if op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"):
        engine, problems = _check_pool(layer, arch)
        return engine, problems, f"{engine} {a.get('kernel_shape', 'global')}"
    if op in ("Gemm", "MatMul"):
        return "conv2d", [], "fully connected: transformed into conv2d"
    if op in ("Add", "Sum", "Mul"):
        kind = "mul" if op == "Mul" else "add"
        if layer.data_inputs < 2:
            # One operand is a constant: a channel-wise bias/scale, folded into the conv or a depthwise conv.
            return "conv2d", [], f"{op} with a constant: folded into the neighbouring conv"
        if kind not in arch.eltwise:
            return (
                "eltwise",
                [f"element-wise {kind}: {arch.name} documents {'/'.join(sorted(arch.eltwise))} only"],
                "",
            )
        return "eltwise", [], f"element-wise {kind}"
    if op == "Concat":
        axis = int(a.get("axis", 1))
        rank = len(a.get("input_shape") or [0, 0, 0, 0])
        if axis not in (1, 1 - rank):
            return "concat", [f"concat on axis {axis}: the DPU concatenates on the channel axis only"], ""
        return "concat", [], "concat on channels"
    if op in ("Resize", "Upsample"):
        mode = str(a.get("mode", "nearest"))
        scales = a.get("scales")
        spatial = scales[2:] if scales and len(scales) == 4 else None
        if mode not in arch.resize_modes:
            return "resize", [f"resize mode {mode!r}: the DPU resizes nearest or linear (bilinear) only"], ""
        if spatial is None:
            return "resize", [], f"resize {mode} (scale not constant here; the compiler checks it)"
        if mode == "nearest" and not all(float(s).is_integer() and s >= 1 for s in spatial):
            return "resize", [f"nearest resize by {spatial}: the DPU needs integer up-scaling factors"], ""
        if mode == "linear" and not all(s in (2.0, 4.0) for s in spatial):
            return "resize", [f"linear resize by {spatial}: the DPU runs bilinear x2 or x4 only"], ""
        return "resize", [], f"resize {mode} x{spatial[0]:g}"
    if op in _ACTIVATION_OPS:
        kind, what = _activation_kind(layer)
        if kind is None:
            return "activation", [what], ""
        producer = layers[layer.inputs[0]] if layer.inputs and layer.inputs[0] >= 0 else None
        if producer is None or producer.verdict != "dpu":
            return "activation", [f"{what} with no DPU layer before it to fuse into"], ""
        allowed = {
            "conv2d": arch.conv_activations,
            "transposed-conv2d": arch.conv_activations,
            "depthwise-conv2d": arch.depthwise_activations,
            "eltwise": arch.eltwise_activations,
            "maxpool2d": arch.pool_activations,
            "avgpool2d": arch.pool_activations,
        }.get(producer.engine, frozenset())
        if kind not in allowed:
            return (
                "activation",
                [
                    (
                        f"{what} after {producer.engine}: {arch.name} fuses "
                        f"{', '.join(sorted(allowed)) or 'no activation'} there"
                    )
                ],
                "",
            )
        return "activation", [], f"{what}, fused into {producer.engine}"
    if op in _FOLDED:
        return "folded", [], _FOLDED[op]
    if op == "Pad":
        mode = str(a.get("mode", "constant"))
        if mode != "constant":
            return "pad", [f"pad mode {mode!r}: only zero (constant) padding is fused on the DPU"], ""
        return "pad", [], "zero padding, fused into the next layer"
    if op in _CPU_ONLY:
        return "cpu", [f"{_CPU_ONLY[op]}: no DPU implementation (UG1414 maps it to the CPU)"], ""
    return "cpu", [f"ONNX op {op} has no DPU operator in UG1414's supported-operator tables"], ""


def _subgraphs(layers: list[Layer]) -> int:
    """Assign ``cpu_depth`` and ``subgraph`` to every layer; return the number of DPU subgraphs."""
    for layer in layers:  # layers are in topological order
        depth = 0
        for p in layer.inputs:
            if p >= 0:
                pl = layers[p]
                depth = max(depth, pl.cpu_depth + (1 if pl.verdict == "cpu" else 0))
        layer.cpu_depth = depth
    parent = list(range(len(layers)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for layer in layers:
        if layer.verdict != "dpu":
            continue
        for p in layer.inputs:
            if p >= 0 and layers[p].verdict == "dpu" and layers[p].cpu_depth == layer.cpu_depth:
                parent[find(layer.index)] = find(p)
    roots: dict[int, int] = {}
    for layer in layers:
        if layer.verdict == "dpu":
            layer.subgraph = roots.setdefault(find(layer.index), len(roots))
    return len(roots)


def readiness(model: onnx.ModelProto | str | Path, arch: str | Path | ArchLimits) -> dict[str, Any]:
    """The per-layer report of ``model`` on ``arch`` (JSON-able dict; see the module docstring)."""
    limits = arch if isinstance(arch, ArchLimits) else resolve_arch(arch)
    source = str(model) if not isinstance(model, onnx.ModelProto) else "in-memory model"
    if not isinstance(model, onnx.ModelProto):
        try:
            model = onnx.load(str(model))
        except FileNotFoundError:
            raise GreenpipeError(f"{model}: no such ONNX file") from None
        except Exception as exc:  # noqa: BLE001  onnx raises DecodeError and friends
            raise GreenpipeError(f"{model}: not a readable ONNX model ({exc})") from None
    graph = _Graph(model)
    layers = _layers(graph)
    for layer in layers:
        engine, problems, how = _check(layer, limits, layers)
        layer.engine = engine
        layer.verdict = "cpu" if problems else "dpu"
        layer.reason = "; ".join(problems) if problems else how
    count = _subgraphs(layers)
    cpu = [layer for layer in layers if layer.verdict == "cpu"]
    return {
        "model": source,
        "arch": limits.name,
        "family": limits.family,
        "boards": limits.boards,
        "summary": {
            "layers": len(layers),
            "dpu_layers": len(layers) - len(cpu),
            "cpu_layers": len(cpu),
            "dpu_subgraphs": count,
            "cpu_ops": [f"{layer.name} ({layer.op})" for layer in cpu],
        },
        "layers": [
            {
                "index": layer.index,
                "name": layer.name,
                "op": layer.op,
                "attrs": layer.attrs,
                "engine": layer.engine,
                "verdict": layer.verdict,
                "reason": layer.reason,
                "subgraph": layer.subgraph,
                "inputs": layer.inputs,
            }
            for layer in layers
        ],
        "limits": limits.to_dict(),
        "note": (
            "prediction from the documented DPU operator limits (see limits.sources and limits.unconfirmed); "
            "vai_c_xir decides the real partition"
        ),
    }


def _brief_attrs(attrs: dict[str, Any]) -> str:
    keys = (
        "kernel_shape",
        "strides",
        "dilations",
        "group",
        "in_channels",
        "out_channels",
        "mode",
        "scales",
        "axis",
        "alpha",
    )
    return ", ".join(f"{k}={attrs[k]}" for k in keys if k in attrs and not (k == "group" and attrs[k] == 1))


def to_markdown(report: dict[str, Any], all_layers: bool = False) -> str:
    """Short markdown: summary, layers per op, a row per CPU layer (per layer with ``all_layers``)."""
    from collections import Counter

    s = report["summary"]
    lines = [
        f"## DPU readiness: {report['arch']} ({report['boards']})",
        "",
        (
            f"{s['layers']} layers: {s['dpu_layers']} on the DPU, {s['cpu_layers']} on the CPU; "
            f"predicted DPU subgraphs: **{s['dpu_subgraphs']}**."
        ),
        "",
        "| op | DPU | CPU |",
        "|---|---|---|",
    ]
    counts = Counter((layer["op"], layer["verdict"]) for layer in report["layers"])
    for op in sorted({op for op, _ in counts}):
        lines.append(f"| {op} | {counts[(op, 'dpu')]} | {counts[(op, 'cpu')]} |")
    shown = [layer for layer in report["layers"] if all_layers or layer["verdict"] == "cpu"]
    if shown:
        lines += [
            "",
            "| # | layer | op | attributes | verdict | subgraph | reason |",
            "|---|---|---|---|---|---|---|",
        ]
    for layer in shown:
        sub = "" if layer["subgraph"] is None else str(layer["subgraph"])
        reason = layer["reason"].replace("|", "/")
        lines.append(
            f"| {layer['index']} | {layer['name']} | {layer['op']} | {_brief_attrs(layer['attrs'])} | "
            f"{layer['verdict'].upper()} | {sub} | {reason} |"
        )
    lines += ["", f"_{report['note']}._", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], json_path: Path, md_path: Path) -> None:
    """Write the JSON and the markdown table (atomically)."""
    from greenpipe.io import atomic_write_bytes, write_json

    write_json(json_path, report)
    atomic_write_bytes(md_path, to_markdown(report).encode())


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m greenpipe.compile.dpu_readiness",
        description="Per-layer DPU readiness of an ONNX model from the documented DPU operator limits.",
    )
    ap.add_argument("model", type=Path, help="ONNX model (a quantize-stage export or a float export)")
    ap.add_argument(
        "--arch", required=True, help=f"DPU: {', '.join([*ALIASES, *ARCHS])}, or an arch.json path"
    )
    ap.add_argument("--json", type=Path, help="also write the JSON report here")
    ap.add_argument("--md", type=Path, help="also write the markdown table here")
    ap.add_argument("--all", action="store_true", help="list every layer, not only those on the CPU")
    args = ap.parse_args(list(argv) if argv is not None else None)
    try:
        report = readiness(args.model, args.arch)
    except GreenpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        from greenpipe.io import write_json

        write_json(args.json, report)
    if args.md:
        args.md.write_text(to_markdown(report, args.all))
    print(to_markdown(report, args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
