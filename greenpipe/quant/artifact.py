"""The quantize stage's output directory, as every later stage reads it.

Layout (written by :func:`greenpipe.quant.stage.quantize_stage`)::

    <quant_dir>/model.qcdq.onnx      # quantized variants: Brevitas QCDQ export (exact fixed-point model)
    <quant_dir>/model.qdq.onnx       # inc: QDQ export of INC's PT2E graph (dynamo exporter)
    <quant_dir>/model.onnx           # float variants: plain ONNX
    <quant_dir>/quant_report.json    # variant, bits, numerics, per-tensor scales, recipe + model_args, ...
    <quant_dir>/reference_val.npz    # the fake-quant PyTorch model's outputs on val, by pair name (float32)
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from greenpipe.errors import GreenpipeError
from greenpipe.io import atomic_write_bytes, read_json

REPORT_FILE = "quant_report.json"
REFERENCE_FILE = "reference_val.npz"


@dataclass(frozen=True)
class QuantArtifact:
    dir: Path
    report: dict[str, Any]

    @property
    def variant(self) -> str:
        return self.report["variant"]

    @property
    def onnx_path(self) -> Path:
        return self.dir / self.report["artifact"]

    def reference(self) -> dict[str, np.ndarray]:
        """The fake-quant model's val outputs by pair name, float32."""
        path = self.dir / REFERENCE_FILE
        if not path.exists():
            raise GreenpipeError(f"{path}: missing; rerun `dvc repro quantize@{self.variant}`")
        with np.load(path) as npz:
            return {name: npz[name].astype(np.float32) for name in npz.files}


def read_quant_artifact(quant_dir: str | Path) -> QuantArtifact:
    """Open a quantize-stage output directory; fail naming what is missing and how to rebuild it."""
    quant_dir = Path(quant_dir)
    report_path = quant_dir / REPORT_FILE
    if not report_path.exists():
        raise GreenpipeError(f"{report_path}: missing; run the quantize stage first (dvc repro quantize)")
    artifact = QuantArtifact(quant_dir, read_json(report_path))
    if not artifact.onnx_path.exists():
        raise GreenpipeError(
            f"{artifact.onnx_path}: missing though {REPORT_FILE} names it; "
            f"rerun `dvc repro quantize@{artifact.variant}`"
        )
    return artifact


def write_reference(path: str | Path, outputs: Mapping[str, np.ndarray]) -> None:
    """Store outputs by name as float32: exactly what the model computed.

    float16 would halve the file but round a float output of magnitude 16-32 by up to 2**-7, as
    much as the compile stage's agreement tolerance: a detector's logits failed it by storage alone.
    """
    buf = BytesIO()
    np.savez_compressed(buf, **{name: np.asarray(a, dtype=np.float32) for name, a in outputs.items()})
    atomic_write_bytes(path, buf.getvalue())
