"""Runtime ``ort``: ONNX Runtime on the CPU (MLAS int8 kernels for QDQ models).

The session is configured the same way everywhere greenpipe measures:
``intra_op_num_threads=threads``, one inter-op thread, sequential execution
and every graph optimization on (that is what fuses ``DQ -> Conv -> Q`` into
``QLinearConv``).  On an x86 CPU without VNNI the model's int8 weights are
re-encoded as uint8 first, exactly (greenpipe.runtime.u8s8), and the label says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from greenpipe.errors import GreenpipeError
from greenpipe.runtime.base import RUNTIMES, cpu_model, describe_host
from greenpipe.runtime.u8s8 import for_this_host
from greenpipe import tooling


def session_options(threads: int, optimized_model_path: str | Path | None = None):
    """ORT session options used for every greenpipe measurement on a CPU."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: the NCHWc "hardware specific" notice is expected
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    return so


class OrtRunner:
    """An ONNX Runtime CPU session over one model with a single input and output."""

    def __init__(self, path: Path, threads: int, batch: int, optimized_model_path: str | Path | None = None):
        import onnxruntime as ort

        self.path, self.threads, self.batch = Path(path), threads, batch
        try:
            model, self.note = for_this_host(self.path)
            self.session = ort.InferenceSession(
                model, session_options(threads, optimized_model_path), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types, onnx its DecodeError
            raise GreenpipeError(
                f"{path}: ONNX Runtime cannot load it ({exc}); rebuild it with `dvc repro compile`"
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        provider = self.session.get_providers()[0]
        return {
            "runtime": "ort",
            "label": f"ONNX Runtime {ort.__version__} ({provider}{'; ' + self.note if self.note else ''})",
            "version": ort.__version__,
            "provider": provider,
            "threads": self.threads,
            "batch": self.batch,
            "cpu": cpu_model(),
            "host": describe_host(self.threads),
        }


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "ONNX Runtime", "real", "tests/runtime/test_ort_runtime.py and the demo's compile / deploy / soak stages",
    "pytest tests/runtime/test_ort_runtime.py", tooling.module("onnxruntime", "onnxruntime")),)


@RUNTIMES.register("ort")
def load(path: Path, threads: int, batch: int) -> OrtRunner:
    return OrtRunner(path, threads, batch)
