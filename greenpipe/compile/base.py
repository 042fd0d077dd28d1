"""What a compile target is: one function from a quantized artifact to a deployable one.

A target *format* (``onnx``; ``xmodel`` for a Vitis AI DPU) registers one
function ``compile(job) -> metrics`` in ``TARGETS``; the targets under
``compile.targets`` in params.yaml name their format, so a new target using
an existing format (a second CPU, a GPU running the same ONNX) is a params
edit.  Every compiler writes ``<out_dir>/<ARTIFACT>`` and
``<out_dir>/compile_report.json`` and checks the artifact it wrote against the
fake-quant reference where it can run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from greenpipe.params import TargetParams
from greenpipe.registry import Registry

REPORT_FILE = "compile_report.json"


@dataclass(frozen=True)
class CompileJob:
    variant: str  # key under quantize.variants
    target: str  # key under compile.targets
    params: TargetParams
    quant_dir: Path  # the quantize stage's output (see greenpipe.quant.artifact)
    data_dir: Path  # the prepared dataset: its val split is the agreement check's input
    out_dir: Path
    threads: int


Compiler = Callable[[CompileJob], dict]

TARGETS: Registry[Compiler] = Registry("compile target format")
