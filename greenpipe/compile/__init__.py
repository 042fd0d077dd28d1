"""Compile targets: quantized export -> deployable artifact, one module per format.

``TARGETS.get(format)(CompileJob(...))`` compiles and checks; see
:mod:`greenpipe.compile.base`.  ``xmodel`` (:mod:`greenpipe.compile.vitis_dpu`)
writes a per-layer DPU readiness report (:mod:`greenpipe.compile.dpu_readiness`)
before it needs Vitis AI's compiler.  :mod:`greenpipe.compile.qdq` is the exact
QCDQ -> ORT-fusible QDQ rewrite the ``onnx`` format uses.
"""

from greenpipe.compile import onnx_cpu, vitis_dpu  # noqa: F401  (register formats "onnx", "xmodel")
from greenpipe.compile.base import REPORT_FILE, TARGETS, CompileJob

__all__ = ["REPORT_FILE", "TARGETS", "CompileJob"]
