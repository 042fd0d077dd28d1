"""Shared entry-point helper for the stage modules in ``tasks/``.

Every stage's ``main()`` parses argv, then hands the rest of its work to
:func:`run_stage`, so that a user-actionable :class:`GreenpipeError` ends the
run with one readable line (and exit status 2) instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenpipe.errors import GreenpipeError


def run_stage(fn: Callable[..., Any], params_path: str | Path | None = None, metrics_path: Path | None = None) -> Any:
    """Call ``fn(params)`` (``fn()`` when no params path is given); write the returned metrics.

    On GreenpipeError print ``error: <message>`` to stderr and exit 2; any
    other exception is a bug and keeps its traceback.
    """
    from greenpipe.io import write_json
    from greenpipe.params import load_params

    try:
        # light: the torch-backed registries are checked by the stage that uses them (and greenpipe check)
        result = fn(load_params(params_path, light=True)) if params_path is not None else fn()
    except GreenpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if metrics_path is not None:
        write_json(metrics_path, result)
    return result
