"""Keras kernels as one self-contained ``tf.keras`` source file and their weights, for another TensorFlow.

The Vitis AI 3.5 TensorFlow 2 container has TensorFlow 2.12 with Keras 2, and
greenpipe's Keras 3 models do not load there from Keras 3's own files. So each
kernel (a functional ``keras.Model``, e.g. a TSM kernel between two shifts) is
written out as a function that rebuilds it layer by layer with
``tf.keras.layers`` and the layer arguments both Keras versions take, reading
its functional config (layers, inbound tensors, inputs, outputs). Weights go
to a ``.npz`` keyed ``<layer>/<index>`` (``layer.get_weights()`` order, the
same in both versions), read back by the file's ``load()``.

Only the layers greenpipe's kernels use are written (:data:`LAYERS`);
``Identity`` becomes ``Activation("linear")``, which Keras 2 has. Anything
else fails naming the layer, so a new layer type is added here, with a test,
when a model first needs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from greenpipe.errors import GreenpipeError

# class name -> the config keys passed on (each one a constructor argument in Keras 2.12 and 3)
LAYERS: dict[str, tuple[str, ...]] = {
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "dilation_rate", "groups", "activation", "use_bias"),
    "DepthwiseConv2D": ("kernel_size", "strides", "padding", "depth_multiplier", "dilation_rate", "activation",
                        "use_bias"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "Add": (),
    "MaxPooling2D": ("pool_size", "strides", "padding"),
    "GlobalAveragePooling2D": ("keepdims",),
    "Dense": ("units", "activation", "use_bias"),
    "Normalization": ("axis", "mean", "variance"),
    "Activation": ("activation",),
}
RENAMED = {"Identity": ("Activation", {"activation": "linear"})}


def _var(name: str) -> str:
    return "t_" + re.sub(r"\W", "_", name)


def _history(arg: Any, where: str) -> Any:
    """The source of one inbound argument: a tensor's variable, or a list of them."""
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        layer, node, index = arg["config"]["keras_history"]
        if node != 0 or index != 0:
            raise GreenpipeError(f"{where}: reads output {index} of call {node} of layer {layer}; only layers "
                                 "called once with one output can be written out")
        return _var(layer)
    if isinstance(arg, list):
        return "[" + ", ".join(_history(a, where) for a in arg) + "]"
    raise GreenpipeError(f"{where}: an inbound argument {arg!r} that is not a tensor cannot be written out")


def _value(v: Any, where: str) -> str:
    if v is None or isinstance(v, (bool, int, float, str)):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + "".join(f"{_value(x, where)}, " for x in v) + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x, where) for x in v) + "]"
    raise GreenpipeError(f"{where}: a config value {v!r} that is not plain data cannot be written out")


def _layer(layer: dict, kernel: str) -> list[str]:
    """The lines that build one layer of a functional config (an input, or a call on its inbound tensors)."""
    cls, cfg, name = layer["class_name"], layer["config"], layer["config"]["name"]
    where = f"kernel {kernel}, layer {name} ({cls})"
    if cls == "InputLayer":
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        return [f"{_var(name)} = tf.keras.Input(shape={_value(tuple(shape[1:]), where)}, batch_size={shape[0]!r}, "
                f"name={name!r})"]
    extra = {}
    if cls in RENAMED:
        cls, extra = RENAMED[cls]
    if cls not in LAYERS:
        raise GreenpipeError(f"{where}: Keras layer {cls} cannot be written for tf.keras yet (supported: "
                             f"{', '.join([*LAYERS, *RENAMED])}); add it to greenpipe/vitis/keras_source.py with a test")
    if cfg.get("data_format", "channels_last") != "channels_last" or cfg.get("invert"):
        raise GreenpipeError(f"{where}: data_format {cfg.get('data_format')!r} / invert {cfg.get('invert')!r}: "
                             "only channels_last and a plain (not inverted) Normalization are written")
    args = {**{k: cfg[k] for k in LAYERS[cls] if k in cfg}, **extra}
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise GreenpipeError(f"{where}: called {len(nodes)} times; only layers called once can be written out")
    node = nodes[0]
    if any(v is not None for v in (node.get("kwargs") or {}).values()):
        raise GreenpipeError(f"{where}: called with keyword arguments {node['kwargs']}; not written out")
    inputs = ", ".join(_history(a, where) for a in node["args"])
    call = ", ".join([f"{k}={_value(v, where)}" for k, v in args.items()] + [f"name={name!r}"])
    return [f"{_var(name)} = L.{cls}({call})({inputs})"]


def _endpoints(entries: Any) -> list[str]:
    """Layer names of a config's ``input_layers`` / ``output_layers`` (one ``[name, 0, 0]`` or a list of them)."""
    if entries and isinstance(entries[0], str):
        entries = [entries]
    return [e[0] for e in entries]


@dataclass(frozen=True)
class KerasSource:
    """The kernels as source text (a function per kernel, ``KERNELS``, ``load(weights)``) and their weights."""

    source: str
    weights: dict[str, np.ndarray]


def kernels_source(kernels: list[Any], docstring: str) -> KerasSource:
    """Write ``kernels`` (functional Keras models, one name each) as one tf.keras file (see the module doc)."""
    lines = [f'"""{docstring}\n\nWritten by greenpipe (greenpipe/vitis/keras_source.py); needs only TensorFlow '
             '(tf.keras) and numpy.\n"""', "", "import numpy as np", "import tensorflow as tf", "",
             "L = tf.keras.layers", "", ""]
    weights: dict[str, np.ndarray] = {}
    names = []
    for model in kernels:
        config = model.get_config()
        fn = re.sub(r"\W", "_", model.name)
        names.append((model.name, fn))
        lines.append(f"def {fn}():")
        lines.append(f'    """Kernel {model.name} as a tf.keras.Model (weights: ``load``)."""')
        for layer in config["layers"]:
            lines += [f"    {s}" for s in _layer(layer, model.name)]
        ins = ", ".join(_var(n) for n in _endpoints(config["input_layers"]))
        outs = [_var(n) for n in _endpoints(config["output_layers"])]
        out = outs[0] if len(outs) == 1 else "[" + ", ".join(outs) + "]"
        lines += [f"    return tf.keras.Model([{ins}], {out}, name={model.name!r})", "", ""]
        for layer in model.layers:
            for i, w in enumerate(layer.get_weights()):
                weights[f"{layer.name}/{i}"] = np.asarray(w)
    lines.append("KERNELS = {" + ", ".join(f"{n!r}: {fn}" for n, fn in names) + "}")
    lines += ["", "", "def load(weights):",
              '    """Every kernel, by name, as a tf.keras.Model with the weights of ``weights`` (.npz keyed '
              'layer/index)."""',
              "    models = {}",
              "    with np.load(weights) as arrays:",
              "        for name, build in KERNELS.items():",
              "            model = build()",
              "            for layer in model.layers:",
              "                count = len(layer.get_weights())",
              "                if count:",
              "                    layer.set_weights([arrays[layer.name + '/' + str(i)] for i in range(count)])",
              "            models[name] = model",
              "    return models", ""]
    return KerasSource("\n".join(lines), weights)
