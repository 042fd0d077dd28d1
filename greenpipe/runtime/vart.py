"""Runtime ``vart``: a compiled ``.xmodel`` on a Xilinx DPU through the VART Python API.

Uses only the documented Vitis AI 3.0 API: ``xir.Graph.deserialize``, the DPU
subgraph from ``get_root_subgraph().toposort_child_subgraph()`` (the one whose
``device`` attribute is ``DPU``), ``vart.Runner.create_runner(subgraph, "run")``,
and ``execute_async`` + ``wait``.  The DPU takes and gives int8 NHWC tensors
whose ``fix_point`` attribute is the power-of-two scale:
``int8 = round(float * 2**fix_point)`` on the way in, ``float = int8 / 2**fix_point``
on the way out.  The runner's batch is the DPU kernel's (the first input
dimension); a call with fewer images fills the batch with zeros.

Two ways in:

* ``run(x)``: one float NCHW input, one float NCHW output (the UNet);
* ``invoke(feeds)`` with ``inputs`` / ``outputs``: every DPU tensor by name,
  int8 NHWC as the DPU holds it, each described by a
  :class:`~greenpipe.video.host.TensorInfo` with scale ``2**-fix_point`` and
  zero point 0.  This is what the TSM host loop drives, kernel by kernel
  (:func:`greenpipe.video.host.bind` maps the compiler's tensor names onto the
  split manifest's).

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
from greenpipe.video.host import TensorInfo
from greenpipe import tooling


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


def _tensor_info(tensor: Any) -> TensorInfo:
    """A DPU tensor as the host loop sees it: int8, scale 2**-fix_point, zero point 0, batch 1."""
    return TensorInfo(tensor.name, (1, *(int(d) for d in tensor.dims[1:])), np.dtype(np.int8),
                      2.0 ** -int(tensor.get_attr("fix_point")), 0)


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
        self.in_tensors = list(self.runner.get_input_tensors())
        self.out_tensors = list(self.runner.get_output_tensors())
        self.in_dims = tuple(self.in_tensors[0].dims)  # (batch, H, W, C) of the first input
        self.in_fix = int(self.in_tensors[0].get_attr("fix_point"))
        self.out_fix = int(self.out_tensors[0].get_attr("fix_point"))
        self.batch = self.in_dims[0]
        self.inputs = [_tensor_info(t) for t in self.in_tensors]
        self.outputs = [_tensor_info(t) for t in self.out_tensors]

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """int8 NHWC arrays, one per DPU input (any number of rows) -> one per DPU output, same rows.

        Rows go through in chunks of the DPU's batch; a short chunk is filled
        with zeros and the filler rows are dropped from the outputs.
        """
        n = len(arrays[0])
        outputs: list[list[np.ndarray]] = [[] for _ in self.out_tensors]
        for start in range(0, n, self.batch):
            rows = min(self.batch, n - start)
            ins = []
            for t, a in zip(self.in_tensors, arrays):
                filled = np.zeros(tuple(t.dims), dtype=np.int8)
                filled[:rows] = a[start : start + rows].reshape(rows, *t.dims[1:])
                ins.append(filled)
            outs = [np.empty(tuple(t.dims), dtype=np.int8) for t in self.out_tensors]
            job_id = self.runner.execute_async(ins, outs)
            self.runner.wait(job_id)
            for kept, out in zip(outputs, outs):
                kept.append(out[:rows])
        return [np.concatenate(kept) for kept in outputs]

    def run(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2:]
        if (h, w) != self.in_dims[1:3]:
            raise GreenpipeError(
                f"{self.path}: the DPU kernel takes {self.in_dims[1]}x{self.in_dims[2]} inputs, got {h}x{w}; "
                "tile or resize the input to the compiled size"
            )
        out = self._execute([to_dpu_input(x, self.in_fix)])[0]
        return from_dpu_output(out, self.out_fix)

    def invoke(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named int8 NHWC inputs (the DPU tensors' names) -> named int8 outputs, as the DPU holds them."""
        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise GreenpipeError(f"{self.path}: no array fed for DPU input(s) {missing}; "
                                 f"the kernel's inputs are {[i.name for i in self.inputs]}")
        outs = self._execute([np.asarray(feeds[i.name], dtype=np.int8) for i in self.inputs])
        return {o.name: out.reshape(len(out), *o.shape[1:]) for o, out in zip(self.outputs, outs)}

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


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "VART + XIR (Vitis AI runtime)", "fake",
    "stand-in xir / vart modules written from the API docs (tests/video/test_vart_kernels.py)",
    "python -c \"import vart, xir\" && dvc repro deploy@vitis_ptq-D  # on a DPU host; D: a device with runtime vart",
    tooling.module("vart")),)


@RUNTIMES.register("vart")
def load(path: Path, threads: int, batch: int) -> VartRunner:
    return VartRunner(path, threads, batch)
