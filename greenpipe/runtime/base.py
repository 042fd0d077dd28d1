"""What a runtime is: ``load(path, threads, batch) -> Runner``, and a Runner runs.

A runtime is what executes a compiled artifact on a device host (ONNX
Runtime on a CPU, VART on a DPU board, ...).  It registers one load function
in ``RUNTIMES``; the runner it returns has one method that matters,
``run(x) -> y`` on numpy arrays in the model's layout (``(N, C, H, W)``
float32 in, the same out), plus ``describe()`` saying what it runs on, so
every measured number can name its source.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from greenpipe.registry import Registry


class Runner(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray:
        """One forward pass: (N, C, H, W) float32 in, the model's output (float32) out."""

    def describe(self) -> dict[str, Any]:
        """What this runs on: ``runtime``, ``label`` (one line, e.g. "ONNX Runtime 1.31 (CPU EP)"),
        ``host`` (e.g. "local CPU (AMD EPYC), 2 threads"), version, provider, threads, batch, CPU model."""


Loader = Callable[[Path, int, int], Runner]

RUNTIMES: Registry[Loader] = Registry("runtime")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_host(threads: int) -> str:
    """E.g. ``local CPU (AMD EPYC), 2 threads``: how every CPU-measured number names its source."""
    return f"local CPU ({cpu_model()}), {threads} thread{'s' if threads != 1 else ''}"
