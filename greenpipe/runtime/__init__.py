"""Runtimes: what runs a compiled artifact on a device host, one module each, one registry.

``RUNTIMES.get(name)(path, threads, batch)`` returns a Runner with
``run(x) -> y`` and ``describe()``; see :mod:`greenpipe.runtime.base`.
"""

from pathlib import Path

from greenpipe.runtime import openvino, ort, torch_cuda, vart  # noqa: F401  (registers the runtimes)
from greenpipe.runtime import tflite  # noqa: F401  (registers "tflite"; TensorFlow loads on first use)
from greenpipe.runtime.base import RUNTIMES, Runner, cpu_model, describe_host, host_facts

__all__ = ["RUNTIMES", "Runner", "cpu_model", "describe_host", "host_facts", "load"]


def load(runtime: str, path: str | Path, threads: int, batch: int = 1) -> Runner:
    """Load ``path`` with the registered runtime ``runtime``."""
    return RUNTIMES.get(runtime)(path, threads, batch)
