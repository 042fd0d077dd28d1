"""Resume state for training loops (train stage, QAT variants): save after progress, load on restart.

A state holds the model, optimizer, scheduler and both RNG streams, plus a
``key`` naming what it belongs to (params, seed, data); a state with another
key is ignored, so a changed run never continues a stale one.  Writes are
atomic, so a kill mid-save leaves the previous state.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from greenpipe.io import atomic_write_bytes


def save_torch(path: Path, obj: dict) -> None:
    """torch.save ``obj`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_state(path: Path, key: str, model: torch.nn.Module, opt: Any, sched: Any,
               rng: np.random.Generator, **progress: Any) -> None:
    """Everything a loop needs to continue bit-for-bit; ``progress`` is the loop's own counters."""
    save_torch(path, {"key": key, "model": model.state_dict(), "opt": opt.state_dict(),
                      "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                      "torch_rng": torch.get_rng_state(), **progress})


def load_state(path: Path | None, key: str, model: torch.nn.Module, opt: Any, sched: Any,
               rng: np.random.Generator) -> dict | None:
    """Restore a matching state in place and return it (for its counters), else None."""
    if path is None or not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("key") != key:
        return None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    return state
