"""Numbers as the reports print them."""

from __future__ import annotations

import math


def num(v: float | None, spec: str = ".2f", none: str = "—") -> str:
    """``v`` formatted with ``spec``; ``none`` for a missing or NaN figure."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec)
