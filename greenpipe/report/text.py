"""Numbers as the reports read and print them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def number(d: Mapping[str, Any], key: str) -> float | None:
    """``d[key]`` as a float when it is a number (not a bool), else None: a metrics file's optional figure."""
    v = d.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def num(v: float | None, spec: str = ".2f", none: str = "—") -> str:
    """``v`` formatted with ``spec``; ``none`` for a missing or NaN figure."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec)


def source_keys(sources: list[str], prefix: str = "") -> dict[str, str]:
    """A short key per distinct source, sorted (``[1]``, ``[2]`` ...; ``[s1]`` ... with ``prefix`` "s"):
    a table row's source cell, and the line of the report's source list that it names."""
    return {src: f"[{prefix}{k}]" for k, src in enumerate(sorted(set(sources)), 1)}
