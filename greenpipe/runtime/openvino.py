"""Runtime ``openvino``: Intel's OpenVINO CPU plugin running the compiled ONNX artifact.

It reads the same ``model.onnx`` the ``onnx`` compile target writes (fp32, or
the QDQ int8 graph: OpenVINO's low-precision transformations turn each
``DQ -> Conv -> Q`` into an int8 convolution on VNNI / AMX).  The plugin is
configured the way greenpipe measures everywhere: ``threads`` inference
threads, one stream, the latency hint, and float32 as the inference precision,
because on a CPU with bf16 (AVX512_BF16 / AMX) OpenVINO would otherwise run
float layers in bf16 and the outputs would no longer be the variant's.

Runtime ``openvino_bf16`` is the same plugin at bf16 inference precision:
float layers run in bfloat16 (natively on AVX512_BF16 / AMX), which is what
the ``bf16`` variant's artifact computes, so there the two agree.  On a CPU
without bf16 both runtimes drop the artifact's float -> bf16 -> float round
trips of the activations and compute in float32 on its bf16-valued weights:
the outputs then differ from the variant's by up to about 1e-3 (measured on an
AVX2-only host), while ONNX Runtime computes the round trips exactly.

On an x86 CPU without VNNI the model's int8 weights are re-encoded as uint8
first, exactly (greenpipe.runtime.u8s8), and the label says so.

The artifact's batch, height and width axes are dynamic; the runner compiles
the model once per input shape it is given (a static shape lets the plugin
pick its best kernels) and keeps each compiled model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.runtime.base import RUNTIMES, cpu_model, describe_host
from greenpipe.runtime.u8s8 import for_this_host
from greenpipe import tooling


def _openvino():
    try:
        import openvino
    except ImportError:
        raise ToolchainMissing(
            "runtime openvino needs the OpenVINO Python package, which is not installed here; "
            "install the project's dependencies (`uv pip install openvino==2026.4.1`)"
        ) from None
    return openvino


class OpenVinoRunner:
    """An OpenVINO CPU model over one ONNX file with a single input and output."""

    def __init__(self, path: Path, threads: int, batch: int, precision: str = "f32"):
        """``precision``: OpenVINO's inference precision for float layers (``f32``; ``bf16`` runs them in
        bfloat16, natively on AVX512_BF16 / AMX, which no longer computes a variant's numerics)."""
        ov = _openvino()
        self.path, self.threads, self.batch, self.precision = Path(path), threads, batch, precision
        self.version = ov.get_version().split("-")[0]
        self.core = ov.Core()
        try:
            model, self.note = for_this_host(self.path)
            self.model = self.core.read_model(model)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with the parser's message
            raise GreenpipeError(
                f"{path}: OpenVINO cannot read it ({str(exc).splitlines()[0]}); rebuild it with "
                "`dvc repro compile`"
            ) from None
        if len(self.model.inputs) != 1 or len(self.model.outputs) != 1:
            raise GreenpipeError(
                f"{path}: runtime openvino runs models with one input and one output, this one has "
                f"{len(self.model.inputs)} / {len(self.model.outputs)}; use a runtime that takes named tensors"
            )
        self.config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self._compiled: dict[tuple[int, ...], Any] = {}

    def _request(self, shape: tuple[int, ...]):
        """The infer request for a static ``shape``, compiling the model for it the first time."""
        if shape not in self._compiled:
            model = self.model.clone()
            model.reshape({model.inputs[0]: list(shape)})
            self._compiled[shape] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self._compiled[shape]

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        request = self._request(tuple(x.shape))
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the next run reuses it

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "openvino" if self.precision == "f32" else f"openvino_{self.precision}",
            "label": (f"OpenVINO {self.version} (CPU plugin, {self.precision} inference precision"
                      f"{'; ' + self.note if self.note else ''})"),
            "version": self.version,
            "provider": "CPU",
            "precision": self.precision,
            "threads": self.threads,
            "batch": self.batch,
            "cpu": cpu_model(),
            "host": describe_host(self.threads),
        }


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "OpenVINO", "real", "tests/runtime/test_openvino_runtime.py (fp32 and int8 QDQ against ONNX Runtime)",
    "pytest tests/runtime/test_openvino_runtime.py", tooling.module("openvino", "openvino")),)


@RUNTIMES.register("openvino")
def load(path: Path, threads: int, batch: int) -> OpenVinoRunner:
    return OpenVinoRunner(path, threads, batch)


@RUNTIMES.register("openvino_bf16")
def load_bf16(path: Path, threads: int, batch: int) -> OpenVinoRunner:
    """Float layers in bf16: native on AVX512_BF16 / AMX; it computes the ``bf16`` variant's artifact exactly."""
    return OpenVinoRunner(path, threads, batch, precision="bf16")
