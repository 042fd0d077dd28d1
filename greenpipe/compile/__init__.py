"""Compile targets: quantized export -> deployable artifact, one module per format.

``TARGETS.get(format)(CompileJob(...))`` compiles and checks; see
:mod:`greenpipe.compile.base`.  :mod:`greenpipe.compile.qdq` is the exact
QCDQ -> ORT-fusible QDQ rewrite the ``onnx`` format uses.
"""

from greenpipe.compile import onnx_cpu  # noqa: F401  (registers format "onnx")
from greenpipe.compile.base import REPORT_FILE, TARGETS, CompileJob, compiled_artifact

__all__ = ["REPORT_FILE", "TARGETS", "CompileJob", "compiled_artifact"]
