"""Shared entry-point helper for the stage modules in ``tasks/``.

Every stage's ``main()`` parses argv, then hands the rest of its work to
:func:`run_stage`, so that a user-actionable :class:`GreenpipeError` ends the
run with one readable line (and exit status 2) instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from greenpipe.errors import GreenpipeError


def run_stage(fn: Callable[[], object]) -> None:
    """Call ``fn()``; on GreenpipeError print ``error: <message>`` to stderr and exit 2."""
    try:
        fn()
    except GreenpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
