"""What a runtime is: ``load(path, threads, batch) -> Runner``, and a Runner runs.

A runtime is what executes a compiled artifact on a device host (ONNX
Runtime on a CPU, VART on a DPU board, ...).  It registers one load function
in ``RUNTIMES``; the runner it returns has one method that matters,
``run(x) -> y`` on numpy arrays in the model's layout (``(N, C, H, W)``
float32 in, the same out), plus ``describe()`` saying what it runs on, so
every measured number can name its source.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from greenpipe.registry import Registry

# The name a device host serves under (its queue's host): the farm stack and infra/agent set it for the worker.
HOST_ENV = "GREENPIPE_AGENT_HOST"


class Runner(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray:
        """One forward pass: (N, C, H, W) float32 in, the model's output (float32) out."""

    def describe(self) -> dict[str, Any]:
        """What this runs on: ``runtime``, ``label`` (one line, e.g. "ONNX Runtime 1.31 (CPU EP)"),
        ``host`` (e.g. "local CPU (AMD EPYC; avx2 fma), 2 threads"), version, provider, threads, batch, CPU model."""


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


# The x86 extensions that set a CPU's fp32, int8 and bf16 arithmetic rates, in the order they are printed.
# A virtual machine's model name (e.g. "AMD EPYC") can hide which of them a host has, and int8 and bf16
# timings differ several-fold with them, so every CPU figure's source names them.
ARITHMETIC_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 arithmetic; without one, bf16 is emulated in fp32


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The ``flags`` of the first processor in ``cpuinfo`` (empty where there is none, e.g. not x86)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The bf16 flags this CPU has (empty: bf16 is emulated here)."""
    flags = cpu_flags(cpuinfo)
    return [f for f in BF16_FLAGS if f in flags]


def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """E.g. ``avx2 fma avx512f avx512_vnni``: which of :data:`ARITHMETIC_FLAGS` this CPU has ("" if none)."""
    flags = cpu_flags(cpuinfo)
    return " ".join(f for f in ARITHMETIC_FLAGS if f in flags)


def _host_label(name: str, threads: int) -> str:
    """E.g. ``local CPU (AMD EPYC; avx2 fma), 2 threads``: ``name``, the CPU model and its extensions, threads."""
    cpu = "; ".join(part for part in (cpu_model(), cpu_isa()) if part)
    return f"{name} ({cpu}), {threads} thread{'s' if threads != 1 else ''}"


def describe_host(threads: int) -> str:
    """E.g. ``local CPU (AMD EPYC; avx2 fma), 2 threads``: how every CPU-measured number names its source."""
    return _host_label("local CPU", threads)


def _run_quiet(argv: list[str]) -> str | None:
    """First lines of a tool's output, or None when it is absent or fails (fingerprints are optional)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return "\n".join(text.splitlines()[:20]) if proc.returncode == 0 and text else None


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def host_name() -> str:
    """This host's name as the controller knows it: ``$GREENPIPE_AGENT_HOST`` on a device host's worker,
    else the hostname."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def host_facts(threads: int, runtime: str | None) -> dict[str, Any]:
    """What this host is: its name, CPU, memory, OS, and the XRT / DPU fingerprint where there is one.

    ``name`` is ``$GREENPIPE_AGENT_HOST`` on a device host's worker, else the hostname; ``runtime`` is
    the runner's one-line label (``describe()["label"]``) or the runtime's name.
    """
    name = host_name()
    return {
        "name": name,
        "hostname": socket.gethostname(),
        "label": _host_label(name, threads),
        "cpu": cpu_model(),
        "cpu_flags": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "mem_total_mb": _mem_total_mb(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": runtime,
        "xrt": _run_quiet(["xbutil", "--version"]),  # VCK5000 hosts (XRT)
        "dpu": _run_quiet(["xdputil", "query"]),  # boards with the Vitis AI runtime image
    }
