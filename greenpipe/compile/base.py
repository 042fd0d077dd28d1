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
KERNELS_FILE = "kernels.json"  # a per-kernel variant's manifest (greenpipe.quant.kernels)


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


def compiled_artifact(compiled_dir: Path, variant: str, target: str) -> tuple[dict, Path]:
    """(compile report, artifact path) of ``variant`` compiled for ``target`` under ``compiled_dir``.

    A per-kernel variant's directory (``kernels.json``: its quantizer wrote TFLite kernels or DPU
    xmodels, what the runtimes load) is deployable as it is, for every target: the artifact is the
    manifest and each kernel runs on the runtime it names. Raises GreenpipeError saying which
    compile to run when the artifact is not there.
    """
    from greenpipe.errors import GreenpipeError
    from greenpipe.io import read_json

    kernels = Path(compiled_dir) / KERNELS_FILE
    if kernels.exists():  # a per-kernel variant: its quantizer already wrote the kernels the runtimes load
        manifest = read_json(kernels)
        missing = [k for k in ("recipe", "model_args") if k not in manifest]
        if missing:
            raise GreenpipeError(f"{kernels}: lacks {', '.join(missing)}; it was written by an older greenpipe: "
                                 f"rerun its quantize stage (dvc repro -f) to deploy it")
        return {"recipe": manifest["recipe"], "model_args": manifest["model_args"], "multiple": 1,
                "artifact": KERNELS_FILE, "kernels": len(manifest["kernels"]), "runtime": manifest["runtime"]}, kernels
    target_dir = Path(compiled_dir) / target
    report_path = target_dir / REPORT_FILE
    if not report_path.exists():
        raise GreenpipeError(
            f"{report_path}: missing; compile {variant} for target {target!r} first "
            f"(dvc repro compile@{variant}-{target}, or python -m tasks.compile --variant {variant} --target {target} ...)"
        )
    compiled = read_json(report_path)
    return compiled, target_dir / compiled["artifact"]
