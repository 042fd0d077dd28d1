"""Runtime ``tflite``: the TensorFlow Lite interpreter on the CPU (XNNPACK / int8 kernels).

A TSM kernel has named inputs (``kKK_shift``, ``kKK_residual``) and one named
output; :class:`TfliteRunner` looks them up through the model's signature, so
``invoke({name: array}) -> {name: array}`` works on the names the split
manifest uses, and ``run(x)`` serves single-input models like every other
runtime.  ``inputs`` / ``outputs`` carry each tensor's dtype and int8
(scale, zero point), which the host loop needs to rescale between kernels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.runtime.base import RUNTIMES, cpu_model, describe_host
from greenpipe.video.host import TensorInfo
from greenpipe import tooling


def _interpreter_class():
    """(Interpreter class, label): LiteRT's standalone interpreter where installed, else TensorFlow's.

    Both run the same TFLite kernels (XNNPACK and the reference int8 ops); LiteRT imports in a
    fraction of a second where TensorFlow takes seconds, and a device host needs no TensorFlow.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up banners are not errors
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"LiteRT {ai_edge_litert.__version__}"
    except ImportError:
        pass
    try:
        import tensorflow as tf
    except ImportError:
        raise ToolchainMissing(
            "runtime tflite needs LiteRT (ai-edge-litert) or TensorFlow (tensorflow-cpu), and neither is "
            "installed here; install the project's dependencies (`make demo`, or `uv pip install ai-edge-litert`)"
        ) from None
    return tf.lite.Interpreter, f"TensorFlow Lite {tf.__version__}"


def _info(name: str, d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(name, tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]), float(scale), int(zp))


class TfliteRunner:
    """One TFLite model on the CPU with ``threads`` threads; tensors addressed by signature name."""

    def __init__(self, path: Path, threads: int, batch: int = 1):
        cls, self.library = _interpreter_class()
        self.version = self.library.split()[-1]
        self.path, self.threads, self.batch = Path(path), threads, batch
        try:
            self.interpreter = cls(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
            sig = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            raise GreenpipeError(f"{path}: TFLite cannot load it ({exc}); rebuild it with "
                                 "`dvc repro video_quantize`") from None
        ins, outs = sig.get_input_details(), sig.get_output_details()
        self.inputs = [_info(n, d) for n, d in ins.items()]
        self.outputs = [_info(n, d) for n, d in outs.items()]
        self._in_index = {n: d["index"] for n, d in ins.items()}
        self._out_index = {n: d["index"] for n, d in outs.items()}

    def invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set every named input, run once, return every named output (copies)."""
        it = self.interpreter
        for name, index in self._in_index.items():
            it.set_tensor(index, feeds[name])
        it.invoke()
        return {name: it.get_tensor(index) for name, index in self._out_index.items()}

    def run(self, x: np.ndarray) -> np.ndarray:
        if len(self.inputs) != 1:
            raise GreenpipeError(f"{self.path}: has {len(self.inputs)} inputs "
                                 f"({', '.join(i.name for i in self.inputs)}); call invoke() with each by name")
        return next(iter(self.invoke({self.inputs[0].name: x}).values()))

    def describe(self) -> dict[str, Any]:
        dtypes = sorted({str(i.dtype) for i in self.inputs})
        return {
            "runtime": "tflite",
            "label": f"{self.library} interpreter (CPU, {'/'.join(dtypes)} I/O)",
            "version": self.version,
            "provider": "CPU",
            "threads": self.threads,
            "batch": self.batch,
            "cpu": cpu_model(),
            "host": describe_host(self.threads),
        }


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "TensorFlow / TFLite", "real", "tests/video/ and the demo's video stages (tensorflow-cpu)",
    "pytest tests/video", tooling.module("tensorflow", "tensorflow-cpu")),)


@RUNTIMES.register("tflite")
def load(path: Path, threads: int, batch: int) -> TfliteRunner:
    return TfliteRunner(path, threads, batch)
