"""Runtimes: what runs a compiled artifact on a device host, one module each, one registry.

``RUNTIMES.get(name)(path, threads, batch)`` returns a Runner with
``run(x) -> y`` and ``describe()``; see :mod:`greenpipe.runtime.base`.
"""

from pathlib import Path

from greenpipe.runtime import ort, torch_cuda, vart  # noqa: F401  (registers the runtimes)
from greenpipe.runtime import tflite  # noqa: F401  (registers "tflite"; TensorFlow loads on first use)
from greenpipe.runtime.base import RUNTIMES, Runner, cpu_model, describe_host, host_facts

__all__ = ["RUNTIMES", "Runner", "cpu_model", "describe_host", "host_facts", "load", "load_artifact"]

KERNELS_FILE = "kernels.json"  # a manifest of several kernels (greenpipe.quant.kernels)


def load(runtime: str, path: str | Path, threads: int, batch: int = 1) -> Runner:
    """Load ``path`` with the registered runtime ``runtime``."""
    return RUNTIMES.get(runtime)(path, threads, batch)


def load_artifact(recipe: str, runtime: str, path: str | Path, threads: int, batch: int = 1) -> Runner:
    """A Runner for a deployed artifact: one graph on ``runtime``, or a kernel manifest on its recipe's host loop.

    A manifest (``kernels.json``) names the runtime of its kernels itself; the recipe's ``pipeline``
    runs them in order with whatever the host does between them (TSM: the shifts).
    """
    if Path(path).name == KERNELS_FILE:
        from greenpipe.recipes import get_recipe

        return get_recipe(recipe).pipeline(Path(path), threads, batch)
    return load(runtime, path, threads, batch)
