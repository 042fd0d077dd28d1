"""Target format ``xmodel``: a Xilinx DPU program compiled by Vitis AI's ``vai_c_xir``.

Two steps, the first of which needs nothing from Vitis AI:

1. **Readiness report.**  The quantize stage's ONNX export is checked layer by
   layer against the target DPU's documented operator limits
   (:mod:`greenpipe.compile.dpu_readiness`); ``dpu_readiness.json`` and
   ``dpu_readiness.md`` are written to the output directory first, so a model
   with layers the DPU cannot run (and the extra DPU subgraphs they cause) is
   seen here, on any machine.
2. **Compile.**  With ``vai_c_xir`` on PATH (only in the Vitis AI
   container, where greenpipe itself does not run: there the bundle's script
   compiles, ``greenpipe vitis-bundle`` then ``infra/vitis/run.sh BUNDLE ptq``)::

       vai_c_xir -x <quantized xmodel> -a <arch.json> -o <out_dir> -n model

   The quantized xmodel is the one vai_q_pytorch wrote for a ``vitis_*``
   variant (``<quant_dir>/vai_q_output/<Model>_int.xmodel``).  Without
   ``vai_c_xir`` the stage stops with :class:`~greenpipe.errors.ToolchainMissing`
   naming it, after the report is written.

Enable it with a target in params.yaml (paths relative to the repo root)::

    compile:
      targets:
        zcu104: {format: xmodel, arch: infra/arch/DPUCZDX8G/ZCU104/arch.json}
        vck5000: {format: xmodel, arch: infra/arch/DPUCVDX8H/VCK50008PE/arch.json}

The compiled xmodel runs only on the DPU, so its agreement with the
fake-quant model is not checked here; the device's ``vart`` runtime runs it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from greenpipe.compile.base import REPORT_FILE, TARGETS, CompileJob
from greenpipe.compile.dpu_readiness import ArchLimits, readiness, resolve_arch, write_report
from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.io import write_json
from greenpipe.quant.artifact import QuantArtifact, read_quant_artifact
from greenpipe import tooling

COMPILER = "vai_c_xir"
NET_NAME = "model"
ARTIFACT = f"{NET_NAME}.xmodel"
READINESS_JSON, READINESS_MD = "dpu_readiness.json", "dpu_readiness.md"
COMPILER_LOG = "vai_c_xir.log"
VITIS_OUTPUT_DIR = (
    "vai_q_output"  # greenpipe.quant.vitis.OUTPUT_DIR (not imported: that module imports torch)
)


def compiler_command(xmodel: Path, arch: Path, out_dir: Path, name: str = NET_NAME) -> list[str]:
    """The documented vai_c_xir call (UG1414, "Compiling for DPU", PyTorch flow)."""
    return [COMPILER, "-x", str(xmodel), "-a", str(arch), "-o", str(out_dir), "-n", name]


def _readiness_line(summary: dict, md_path: Path) -> str:
    cpu = f"; CPU layers: {', '.join(summary['cpu_ops'])}" if summary["cpu_ops"] else ""
    return (
        f"The per-layer DPU readiness report was written without it: {md_path} "
        f"({summary['dpu_layers']} of {summary['layers']} layers on the DPU, "
        f"predicted DPU subgraphs: {summary['dpu_subgraphs']}{cpu})."
    )


def missing_compiler_message(
    job: CompileJob, limits: ArchLimits, summary: dict, md_path: Path, has_xmodel: bool
) -> str:
    """The ToolchainMissing text when vai_c_xir is not on PATH (``has_xmodel``: the variant has one to compile)."""
    which = "" if has_xmodel else (
        f" (variant {job.variant} has no vai_q_pytorch xmodel: an xmodel target compiles vitis_ptq, "
        "vitis_fastft or vitis_qat)")
    return (
        f"compile target {job.target!r} (format xmodel, {limits.name}) needs AMD's DPU compiler "
        f"`{COMPILER}`, which is not on PATH here{which}. It compiles the quantized xmodel that vai_q_pytorch "
        "writes; both live only in the Vitis AI 3.5 container (not on PyPI), which cannot run greenpipe "
        "(Python 3.8, torch 1.13 there). Quantize and compile there from a bundle: `greenpipe vitis-bundle "
        f"CHECKPOINT CALIB_DUMP --arch {job.params.arch} --out BUNDLE`, then `infra/vitis/run.sh BUNDLE ptq` "
        f"(writes BUNDLE/out-ptq/compiled/model.xmodel). Check: `which {COMPILER}`. "
        + _readiness_line(summary, md_path)
    )


def quantized_xmodel(quant: QuantArtifact) -> Path:
    """The xmodel vai_q_pytorch wrote for ``quant``'s variant; GreenpipeError when it has none."""
    out = quant.dir / VITIS_OUTPUT_DIR
    found = (sorted(out.rglob("*_int.xmodel")) or sorted(out.rglob("*.xmodel"))) if out.is_dir() else []
    if not found:
        raise GreenpipeError(
            f"variant {quant.variant}: no quantized xmodel under {out}; an xmodel target compiles what AMD's "
            "quantizer writes, so use a vitis_* variant (vitis_ptq, vitis_fastft, vitis_qat), or quantize and "
            "compile in the Vitis AI container from a bundle (`greenpipe vitis-bundle`, then "
            "`infra/vitis/run.sh BUNDLE ptq`)"
        )
    if len(found) > 1:
        raise GreenpipeError(
            f"{out}: several xmodels ({', '.join(p.name for p in found)}); rerun its quantize stage"
        )
    return found[0]


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "vai_c_xir", "never", "nothing: no Vitis AI container here. tests/compile/test_dpu_readiness.py checks the "
    "readiness report and the missing-tool message; tests/vitis/test_bundle.py checks the bundle's script up "
    "to its missing-module stop, never its vai_c_xir call",
    "greenpipe vitis-bundle models/denoise/checkpoint.pt artifacts/calib --arch "
    "infra/arch/DPUCZDX8G/ZCU104/arch.json --out B && infra/vitis/run.sh B ptq  # B/out-ptq/compiled/model.xmodel",
    tooling.command(["vai_c_xir", "--help"])),)


@TARGETS.register("xmodel")
def compile_xmodel(job: CompileJob) -> dict:
    """Write the readiness report, then compile ``job.quant_dir``'s xmodel with vai_c_xir; return metrics."""
    quant = read_quant_artifact(job.quant_dir)
    arch_path = Path(job.params.arch or "")
    limits = resolve_arch(arch_path)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    report = readiness(quant.onnx_path, limits)
    md_path = job.out_dir / READINESS_MD
    write_report(report, job.out_dir / READINESS_JSON, md_path)
    summary = report["summary"]

    if shutil.which(COMPILER) is None:
        try:
            quantized_xmodel(quant)
            has_xmodel = True
        except GreenpipeError:
            has_xmodel = False
        raise ToolchainMissing(missing_compiler_message(job, limits, summary, md_path, has_xmodel))
    xmodel = quantized_xmodel(quant)
    command = compiler_command(xmodel, arch_path, job.out_dir)
    proc = subprocess.run(command, capture_output=True, text=True, check=False)  # exit status checked below
    log_path = job.out_dir / COMPILER_LOG
    log_path.write_text(f"$ {' '.join(command)}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise GreenpipeError(
            f"{COMPILER} failed (exit {proc.returncode}) compiling {xmodel} for {limits.name}: {tail}\n"
            f"Full log: {log_path}. " + _readiness_line(summary, md_path)
        )
    artifact = job.out_dir / ARTIFACT
    if not artifact.exists():
        raise GreenpipeError(
            f"{COMPILER} exited 0 but wrote no {artifact}; see {log_path} (files written: "
            f"{', '.join(sorted(p.name for p in job.out_dir.iterdir()))})"
        )
    compile_report = {
        "variant": job.variant,
        "target": job.target,
        "format": job.params.format,
        "artifact": ARTIFACT,
        "source_artifact": str(xmodel),
        "arch": str(arch_path),
        "dpu_target": limits.name,
        "recipe": quant.report["recipe"],
        "model_args": quant.report["model_args"],
        "multiple": quant.report["multiple"],
        "dpu_numerics": quant.report["dpu_numerics"],
        "model_mb": artifact.stat().st_size / 1e6,
        "compiler": {"command": command, "log": COMPILER_LOG},
        "readiness": {**summary, "report": READINESS_JSON},
        "agreement": None,  # the xmodel runs only on the DPU: the device's vart runtime checks it
    }
    write_json(job.out_dir / REPORT_FILE, compile_report)
    return {
        "variant": job.variant,
        "target": job.target,
        "model_mb": compile_report["model_mb"],
        "dpu_layers": summary["dpu_layers"],
        "cpu_layers": summary["cpu_layers"],
        "predicted_dpu_subgraphs": summary["dpu_subgraphs"],
        "source": f"{COMPILER} for {limits.name}; readiness predicted from documented DPU limits",
    }
