"""Runtime ``vart``: a compiled ``.xmodel`` on a Xilinx DPU through the VART Python API.

Uses only the documented Vitis AI 3.0 API: ``xir.Graph.deserialize``, the DPU
subgraph from ``get_root_subgraph().toposort_child_subgraph()`` (the one whose
``device`` attribute is ``DPU``), ``vart.Runner.create_runner(subgraph, "run")``,
and ``execute_async`` + ``wait``.  The DPU takes and gives int8 NHWC tensors
whose ``fix_point`` attribute is the power-of-two scale:
``int8 = round(float * 2**fix_point)`` on the way in, ``float = int8 / 2**fix_point``
on the way out.  The runner's batch is the DPU kernel's (the first input
dimension); a call with fewer images fills the batch with zeros.

``xir`` and ``vart`` are not on PyPI; without them :func:`load` raises
:class:`~greenpipe.errors.ToolchainMissing` saying where they come from.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.runtime.base import RUNTIMES, cpu_model


def missing_toolchain_message(missing: list[str]) -> str:
    """The one message a user sees when the VART Python modules are absent."""
    names = ", ".join(f"`{m}`" for m in missing)
    return (
        f"runtime 'vart' needs the Vitis AI runtime Python modules `xir` and `vart`; missing here: {names}. "
        "They ship in the Vitis AI 3.0 runtime: on a ZCU104 / Ultra96 board in the Vitis AI board image, "
        "on a VCK5000 host in the card's XRT + VART packages, or inside the Vitis AI docker container. "
        'Check with: python -c "import vart, xir"'
    )


def _import_toolchain():
    modules, missing = {}, []
    for name in ("xir", "vart"):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ToolchainMissing(missing_toolchain_message(missing))
    return modules["xir"], modules["vart"]


def to_dpu_input(x: np.ndarray, fix_point: int) -> np.ndarray:
    """(N, C, H, W) float -> (N, H, W, C) int8 at scale 2**-fix_point, saturating like the DPU."""
    q = np.round(x.transpose(0, 2, 3, 1).astype(np.float64) * 2.0**fix_point)
    return np.ascontiguousarray(np.clip(q, -128, 127).astype(np.int8))


def from_dpu_output(y: np.ndarray, fix_point: int) -> np.ndarray:
    """(N, H, W, C) int8 at scale 2**-fix_point -> (N, C, H, W) float32."""
    return np.ascontiguousarray((y.astype(np.float32) * np.float32(2.0**-fix_point)).transpose(0, 3, 1, 2))


class VartRunner:
    """One DPU subgraph of an xmodel, run through a VART runner."""

    def __init__(self, path: Path, threads: int, batch: int):
        xir, vart = _import_toolchain()
        self.path, self.threads, self.requested_batch = Path(path), threads, batch
        if not self.path.exists():
            raise GreenpipeError(f"{path}: no xmodel; compile for a DPU target first (dvc repro compile)")
        graph = xir.Graph.deserialize(str(path))
        subgraphs = graph.get_root_subgraph().toposort_child_subgraph()
        dpu = [s for s in subgraphs if s.has_attr("device") and s.get_attr("device").upper() == "DPU"]
        if len(dpu) != 1:
            raise GreenpipeError(
                f"{path}: expected one DPU subgraph, found {len(dpu)}; the model has ops the DPU cannot run "
                "(check the compiler log) or is not compiled for a DPU"
            )
        self.subgraph = dpu[0]
        self.runner = vart.Runner.create_runner(self.subgraph, "run")
        self.in_tensor = self.runner.get_input_tensors()[0]
        self.out_tensor = self.runner.get_output_tensors()[0]
        self.in_dims = tuple(self.in_tensor.dims)  # (batch, H, W, C)
        self.out_dims = tuple(self.out_tensor.dims)
        self.in_fix = int(self.in_tensor.get_attr("fix_point"))
        self.out_fix = int(self.out_tensor.get_attr("fix_point"))
        self.batch = self.in_dims[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        n, _, h, w = x.shape
        if (h, w) != self.in_dims[1:3]:
            raise GreenpipeError(
                f"{self.path}: the DPU kernel takes {self.in_dims[1]}x{self.in_dims[2]} inputs, got {h}x{w}; "
                "tile or resize the input to the compiled size"
            )
        outputs = []
        for start in range(0, n, self.batch):
            chunk = to_dpu_input(x[start : start + self.batch], self.in_fix)
            filled = np.zeros(self.in_dims, dtype=np.int8)  # fill the DPU batch; extra rows are dropped below
            filled[: len(chunk)] = chunk
            out = np.empty(self.out_dims, dtype=np.int8)
            job_id = self.runner.execute_async([filled], [out])
            self.runner.wait(job_id)
            outputs.append(from_dpu_output(out[: len(chunk)], self.out_fix))
        return np.concatenate(outputs)

    def describe(self) -> dict[str, Any]:
        def attr(name: str) -> Any:
            return self.subgraph.get_attr(name) if self.subgraph.has_attr(name) else None

        return {
            "runtime": "vart",
            "label": f"VART on DPU {attr('dpu_name') or '(unnamed)'}",
            "provider": "DPU",
            "dpu_fingerprint": attr("dpu_fingerprint"),
            "dpu_name": attr("dpu_name"),
            "threads": self.threads,
            "batch": self.batch,
            "input_fix_point": self.in_fix,
            "output_fix_point": self.out_fix,
            "cpu": cpu_model(),
            "host": f"DPU board/card host ({cpu_model()}), batch {self.batch}",
        }


@RUNTIMES.register("vart")
def load(path: Path, threads: int, batch: int) -> VartRunner:
    return VartRunner(path, threads, batch)
