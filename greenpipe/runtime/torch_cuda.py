"""Runtimes ``torch_cuda`` (fp32) and ``torch_cuda_fp16``: the GPU baseline, PyTorch eager on CUDA.

The original comparison measured the float model on an RTX 3090 in PyTorch,
fp32 and fp16; these runtimes do the same with the *compiled float artifact's
own weights*:

* the artifact is a float ONNX file (the ``fp32`` variant compiled for an
  ``onnx`` target); the ``compile_report.json`` beside it names the recipe
  and its ``model_args`` (checkpoints and reports describe themselves), so the
  recipe rebuilds the exact float architecture the artifact was exported
  from;
* the weights are the ONNX file's initializers, loaded by parameter name
  (the exporter keeps PyTorch's names) with every parameter required and
  every shape checked, so the numbers are the artifact's, not a checkpoint
  that may have moved on;
* fp16 is ``model.half()`` with float32 in and out, as a PyTorch user would
  run it.

Why not ONNX Runtime's CUDA execution provider on the same file: the
baseline being reproduced is PyTorch's CUDA kernels, and ``onnxruntime-gpu``
installs over greenpipe's ``onnxruntime`` (same module name), which breaks the
CPU runtime on that host.  The agreement of this runtime with ``ort`` on the
same artifact is what the GPU tests check.  Quantized (QDQ) artifacts are
refused: there is no int8 GPU baseline here.

Timing: ``run(x)`` copies the batch to the GPU, runs the model and copies the
result back with ``.cpu()``, which waits for the GPU to finish, so a caller's
wall-clock time (LoadGen's) covers the whole inference, transfers included.

Needs a CUDA build of PyTorch and an NVIDIA GPU; without them :func:`load`
raises :class:`~greenpipe.errors.ToolchainMissing` saying which is missing.
Nothing is imported from torch until a runner is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.runtime.base import RUNTIMES, cpu_model
from greenpipe import tooling

Precision = Literal["fp32", "fp16"]
COMPILE_REPORT = "compile_report.json"  # greenpipe.compile.base.REPORT_FILE (not imported: it pulls params)


def missing_cuda_message(torch_version: str | None, cuda_build: str | None, gpus: int) -> str:
    """The ToolchainMissing text for a host without a usable CUDA PyTorch (pure, for the tests)."""
    head = "runtime 'torch_cuda' runs the float model on an NVIDIA GPU with a CUDA build of PyTorch; "
    check = 'Check: nvidia-smi -L and python -c "import torch; print(torch.version.cuda, torch.cuda.is_available())"'
    if torch_version is None:
        return head + "PyTorch is not importable here. Install greenpipe with its dependencies. " + check
    if cuda_build is None:
        return (
            head
            + f"this torch {torch_version} is a CPU-only build (torch.version.cuda is None). On the GPU host, "
            f"install the CUDA wheel of the same version from https://download.pytorch.org/whl/ (pip install "
            f"torch=={torch_version.split('+')[0]} --index-url https://download.pytorch.org/whl/cu<version> "
            "matching the NVIDIA driver). " + check
        )
    return (
        head + f"torch {torch_version} is built for CUDA {cuda_build} but sees {gpus} usable GPU(s) "
        "(torch.cuda.is_available() is False): no NVIDIA GPU, no or too old a driver, or CUDA_VISIBLE_DEVICES "
        "hides it. " + check
    )


def _require_cuda():
    try:
        import torch
    except ImportError:
        raise ToolchainMissing(missing_cuda_message(None, None, 0)) from None
    if torch.version.cuda is None or not torch.cuda.is_available():
        raise ToolchainMissing(missing_cuda_message(torch.__version__, torch.version.cuda, 0))
    return torch


def float_model_from_artifact(path: str | Path):
    """(float torch model on the CPU, compile report) rebuilt from a compiled float ONNX artifact.

    The recipe and ``model_args`` come from ``compile_report.json`` beside the
    artifact; every parameter comes from the ONNX initializer of the same name.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from greenpipe.io import read_json
    from greenpipe.recipes import get_recipe

    path = Path(path)
    report_path = path.parent / COMPILE_REPORT
    if not path.exists():
        raise GreenpipeError(
            f"{path}: no compiled artifact; compile the fp32 variant first (dvc repro compile)"
        )
    if not report_path.exists():
        raise GreenpipeError(
            f"{report_path}: missing; torch_cuda rebuilds the model from the recipe and model_args it records. "
            "Recompile: dvc repro compile"
        )
    report = read_json(report_path)
    model = onnx.load(str(path))
    quantized = sorted(
        {n.op_type for n in model.graph.node if "Quant" in n.op_type or "QLinear" in n.op_type}
    )
    if report.get("dpu_numerics") or quantized:
        raise GreenpipeError(
            f"{path}: a quantized artifact (variant {report.get('variant', '?')}, "
            f"ops {', '.join(quantized) or 'int8'}); "
            "torch_cuda is the float GPU baseline (fp32 / fp16): deploy the fp32 variant to the GPU, and run "
            "quantized variants with the ort or vart runtime"
        )
    for key in ("recipe", "model_args"):
        if key not in report:
            raise GreenpipeError(
                f"{report_path}: no {key!r}; recompile with this greenpipe (dvc repro compile)"
            )
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    torch_model = get_recipe(report["recipe"]).build_model(report["model_args"])
    state = torch_model.state_dict()
    missing = [k for k in state if k not in weights]
    wrong = [
        f"{k} {tuple(weights[k].shape)} != {tuple(v.shape)}"
        for k, v in state.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    if missing or wrong:
        raise GreenpipeError(
            f"{path}: its weights do not match recipe {report['recipe']!r} with {report['model_args']}: "
            f"missing {', '.join(missing[:5]) or 'none'}; shape mismatch {', '.join(wrong[:5]) or 'none'}. "
            "The artifact was not exported from this recipe's model; recompile it (dvc repro compile)"
        )
    torch_model.load_state_dict({k: torch.from_numpy(np.array(weights[k])) for k in state}, strict=True)
    return torch_model.eval(), report


class TorchCudaRunner:
    """A float model on one CUDA device, fp32 or fp16, float32 numpy in and out."""

    def __init__(self, path: Path, threads: int, batch: int, precision: Precision = "fp32"):
        torch = _require_cuda()
        self.torch = torch
        model, self.report = float_model_from_artifact(path)
        self.path, self.threads, self.batch, self.precision = Path(path), threads, batch, precision
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = model.to(device=self.device, dtype=self.dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device).to(self.dtype)
            y = self.model(t)
            # .cpu() blocks until the GPU is done: the caller's timer sees the whole inference.
            return y.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        torch = self.torch
        gpu = torch.cuda.get_device_name(self.device)
        return {
            "runtime": "torch_cuda" if self.precision == "fp32" else "torch_cuda_fp16",
            "label": f"PyTorch {torch.__version__} CUDA {torch.version.cuda} ({gpu}, {self.precision})",
            "version": torch.__version__,
            "provider": "CUDA",
            "precision": self.precision,
            "gpu": gpu,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "threads": self.threads,
            "batch": self.batch,
            "cpu": cpu_model(),
            "host": f"GPU host ({gpu}, {self.precision}), CPU {cpu_model()}",
        }


def _cuda_probe() -> tooling.Found:
    """For ``greenpipe doctor``: the CUDA version and GPU when this torch can use one, else why not."""
    try:
        torch = _require_cuda()
    except ToolchainMissing as err:
        return tooling.Found(False, str(err).split("; ", 1)[-1].split(". ")[0])
    return tooling.Found(True, f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "CUDA runtime (PyTorch CUDA build)", "never",
    "nothing: tests/runtime/test_torch_cuda.py's gpu-marked agreement test skips on a CPU-only host",
    "pytest -m gpu tests/runtime/test_torch_cuda.py", _cuda_probe),)


@RUNTIMES.register("torch_cuda")
def load(path: Path, threads: int, batch: int) -> TorchCudaRunner:
    return TorchCudaRunner(path, threads, batch, "fp32")


@RUNTIMES.register("torch_cuda_fp16")
def load_fp16(path: Path, threads: int, batch: int) -> TorchCudaRunner:
    return TorchCudaRunner(path, threads, batch, "fp16")
