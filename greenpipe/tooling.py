"""How an adapter declares the external tool it needs, and how ``greenpipe doctor`` finds it here.

Every module that registers a quantization variant, compile target format,
runtime or power meter declares, next to its adapter, the external tools it
needs as ``EXTERNAL_TOOLS = (Tool(...), ...)``.  A :class:`Tool` carries two
kinds of fact:

* static, the same on every machine: how far greenpipe's own tests got with
  it (:data:`EVIDENCE`: run against the real tool, against a stand-in for its
  API, or never run) and the command that would prove the adapter on a host
  that has the tool;
* a probe run on the machine running ``greenpipe doctor``: present or not,
  and its version (:func:`module`, :func:`command`, :func:`path`).

Standard library only: every adapter imports this module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Evidence = Literal["real", "fake", "never"]
# What each evidence level means, as the table prints it.
EVIDENCE: dict[str, str] = {
    "real": "ran here against the real tool",
    "fake": "ran against a fake of its API",
    "never": "never ran",
}


@dataclass(frozen=True)
class Found:
    """One probe's answer: whether the tool is usable here, and its version or why not."""

    present: bool
    detail: str  # the version when present; what is missing when not


Probe = Callable[[], Found]


@dataclass(frozen=True)
class Tool:
    """An external tool, library, runtime or counter an adapter needs.

    name:     what users call it (``vai_q_pytorch (pytorch_nndct)``)
    evidence: ``real`` | ``fake`` | ``never`` (:data:`EVIDENCE`)
    how:      what greenpipe's tests ran it against (the test file, the stand-in)
    proof:    the command that proves the adapter on a host that has the tool
    probe:    finds it on this machine (see :func:`module`, :func:`command`, :func:`path`)
    """

    name: str
    evidence: Evidence
    how: str
    proof: str
    probe: Probe = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.evidence not in EVIDENCE:
            raise ValueError(f"tool {self.name!r}: evidence {self.evidence!r}, expected one of {', '.join(EVIDENCE)}")


def module(name: str, dist: str | None = None) -> Probe:
    """Probe: the Python module ``name`` is importable; version from distribution ``dist`` (no import),
    else from the module's ``__version__`` (imported only when it is there)."""

    def probe() -> Found:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            return Found(False, f"Python module {name} not importable")
        if dist:
            try:
                return Found(True, importlib.metadata.version(dist))
            except importlib.metadata.PackageNotFoundError:
                pass
        try:
            return Found(True, str(getattr(importlib.import_module(name), "__version__", "version unknown")))
        except Exception as exc:  # a broken install is "not usable", with its reason
            return Found(False, f"import {name} failed: {exc}")

    return probe


def command(argv: list[str]) -> Probe:
    """Probe: ``argv[0]`` is on PATH; its version is the first line ``argv`` prints."""

    def probe() -> Found:
        exe = shutil.which(argv[0])
        if exe is None:
            return Found(False, f"{argv[0]} not on PATH")
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Found(False, f"{' '.join(argv)} failed: {exc}")
        lines = (out.stdout or out.stderr).strip().splitlines()
        return Found(True, lines[0].strip() if lines else exe)

    return probe


def path(pattern: str, what: str) -> Probe:
    """Probe: a file matching the glob ``pattern`` (absolute) exists; ``what`` names it in the answer."""

    def probe() -> Found:
        root = Path(pattern).anchor
        hits = sorted(Path(root).glob(pattern[len(root):]))
        return Found(True, f"{what} ({len(hits)})") if hits else Found(False, f"no {pattern}")

    return probe


def any_of(*probes: Probe) -> Probe:
    """Probe: the first of ``probes`` that finds something (e.g. ``xbutil`` or ``pyxrt``)."""

    def probe() -> Found:
        answers = [p() for p in probes]
        return next((a for a in answers if a.present), Found(False, "; ".join(a.detail for a in answers)))

    return probe


