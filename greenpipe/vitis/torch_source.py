"""A float PyTorch model as one self-contained source file and its weights, for another torch.

The Vitis AI container's torch (1.13, Python 3.8) cannot import greenpipe, and
vai_q_pytorch wants a plain ``nn.Module`` whose forward it can trace. So the
model is traced with ``torch.fx`` and written out again as plain PyTorch: one
class whose ``__init__`` builds every leaf module under a flat name
(``downs.0.1.2`` -> ``downs_0_1_2``) and whose ``forward`` is the traced graph,
line by line. ``+`` and ``torch.cat`` become ``Add`` / ``Cat`` modules, one per
use, because vai_q_pytorch's QAT quantizes module outputs and swaps these for
its own. Weights go to a ``.npz`` of the flat state dict (numpy only, no
pickle), read back by the file's ``load()``.

Only what greenpipe's models use is written: ``Conv2d``, ``ReLU``,
``MaxPool2d``, ``Upsample``, ``Identity``, ``+`` and ``torch.cat``; anything
else fails naming the op, so a new layer type is added here, with a test, when
a model first needs it.
"""

from __future__ import annotations

import keyword
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from greenpipe.errors import GreenpipeError

FUNCTIONS = {operator.add: "Add", torch.add: "Add", torch.cat: "Cat"}  # call_function -> helper module

HELPERS = {
    "Add": '''class Add(nn.Module):
    """``x + y`` as a module: vai_q_pytorch's QAT puts its own Add in its place."""

    def forward(self, x, y):
        return x + y
''',
    "Cat": '''class Cat(nn.Module):
    """``torch.cat`` as a module: vai_q_pytorch's QAT puts its own Cat in its place."""

    def forward(self, tensors, dim=0):
        return torch.cat(tensors, dim)
''',
}


def _constructor(m: nn.Module, where: str) -> str:
    """The source that builds a leaf module equal to ``m`` (weights apart)."""
    if type(m) is nn.Conv2d:
        return (f"nn.Conv2d({m.in_channels}, {m.out_channels}, kernel_size={m.kernel_size}, stride={m.stride}, "
                f"padding={m.padding!r}, dilation={m.dilation}, groups={m.groups}, bias={m.bias is not None}, "
                f"padding_mode={m.padding_mode!r})")
    if type(m) is nn.ReLU:
        return "nn.ReLU()"
    if type(m) is nn.Identity:
        return "nn.Identity()"
    if type(m) is nn.MaxPool2d and not m.return_indices:
        return (f"nn.MaxPool2d(kernel_size={m.kernel_size!r}, stride={m.stride!r}, padding={m.padding!r}, "
                f"dilation={m.dilation!r}, ceil_mode={m.ceil_mode})")
    if type(m) is nn.Upsample:
        corners = "" if m.mode == "nearest" else f", align_corners={m.align_corners!r}"
        return f"nn.Upsample(size={m.size!r}, scale_factor={m.scale_factor!r}, mode={m.mode!r}{corners})"
    raise GreenpipeError(
        f"{where}: layer {type(m).__module__}.{type(m).__name__} cannot be written as plain PyTorch yet "
        f"(supported: Conv2d, ReLU, MaxPool2d without indices, Upsample, Identity); add it to "
        f"greenpipe/vitis/torch_source.py with a test")


def _flat(target: str, taken: set[str]) -> str:
    name = target.replace(".", "_")
    if not name.isidentifier() or keyword.iskeyword(name) or name[0].isdigit():
        name = f"m_{name}"
    while name in taken:
        name += "_"
    taken.add(name)
    return name


@dataclass(frozen=True)
class TorchSource:
    """The model as source text (class ``class_name``, function ``load(weights)``) and its flat weights."""

    source: str
    class_name: str
    weights: dict[str, np.ndarray]


def model_source(model: nn.Module, docstring: str) -> TorchSource:
    """Trace ``model`` and write it as one file that needs only torch and numpy (see the module doc).

    ``docstring`` opens the file (say what the model is and where it came from).
    Raises GreenpipeError naming a layer or op this writer does not handle, or
    when the model cannot be traced.
    """
    class_name = type(model).__name__
    try:
        graph = fx.symbolic_trace(model.eval()).graph
    except Exception as exc:  # fx raises many types; the user needs the model and the cause
        raise GreenpipeError(f"{class_name}: torch.fx cannot trace it ({type(exc).__name__}: {exc}); the Vitis "
                             "bundle needs a forward without data-dependent control flow") from None
    modules = dict(model.named_modules())
    taken: set[str] = set()
    leaves: dict[str, str] = {}  # target -> flat attribute name
    init: list[str] = []
    body: list[str] = []
    helpers: list[str] = []
    weights: dict[str, np.ndarray] = {}
    inputs: list[str] = []

    def arg(a: Any) -> str:
        if isinstance(a, fx.Node):
            return a.name
        if isinstance(a, (list, tuple)):
            inner = ", ".join(arg(x) for x in a)
            return f"[{inner}]" if isinstance(a, list) else f"({inner}{',' if len(a) == 1 else ''})"
        if a is None or isinstance(a, (bool, int, float, str)):
            return repr(a)
        raise GreenpipeError(f"{class_name}: an argument of type {type(a).__name__} ({a!r}) cannot be written out")

    def call(args: tuple, kwargs: dict) -> str:
        return ", ".join([arg(a) for a in args] + [f"{k}={arg(v)}" for k, v in kwargs.items()])

    for node in graph.nodes:
        if node.op == "placeholder":
            inputs.append(node.name)
        elif node.op == "call_module":
            if node.target not in leaves:
                leaves[node.target] = _flat(node.target, taken)
                m = modules[node.target]
                init.append(f"self.{leaves[node.target]} = {_constructor(m, f'{class_name}.{node.target}')}")
                for k, v in m.state_dict().items():
                    weights[f"{leaves[node.target]}.{k}"] = v.detach().cpu().numpy().copy()
            body.append(f"{node.name} = self.{leaves[node.target]}({call(node.args, node.kwargs)})")
        elif node.op == "call_function" and node.target in FUNCTIONS and not (
                node.target is torch.add and (len(node.args) > 2 or "alpha" in node.kwargs)):
            kind = FUNCTIONS[node.target]
            if kind not in helpers:
                helpers.append(kind)
            name = _flat(f"{kind.lower()}_{node.name}", taken)
            init.append(f"self.{name} = {kind}()")
            body.append(f"{node.name} = self.{name}({call(node.args, node.kwargs)})")
        elif node.op == "output":
            body.append(f"return {arg(node.args[0])}")
        else:
            raise GreenpipeError(
                f"{class_name}: traced op {node.op} {getattr(node.target, '__name__', node.target)!r} "
                f"(node {node.name}) cannot be written as plain PyTorch yet (supported: the layers in "
                "greenpipe/vitis/torch_source.py, + and torch.cat); add it there with a test")

    lines = [f'"""{docstring}\n\nWritten by greenpipe (greenpipe/vitis/torch_source.py); needs only torch and numpy.\n"""',
             "", "import numpy as np", "import torch", "from torch import nn", "", ""]
    for h in helpers:
        lines += [HELPERS[h], ""]
    lines += [f"class {class_name}(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    lines += [f"        {s}" for s in init]
    lines += ["", f"    def forward(self, {', '.join(inputs)}):"] + [f"        {s}" for s in body]
    lines += ["", "", "def load(weights):",
              f'    """A {class_name} in eval mode with the weights of ``weights`` (the state dict as .npz)."""',
              f"    model = {class_name}()",
              "    with np.load(weights) as arrays:",
              "        model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in arrays.files})",
              "    return model.eval()", ""]
    return TorchSource("\n".join(lines), class_name, weights)
