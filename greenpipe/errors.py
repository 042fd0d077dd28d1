"""Errors a user can act on: each names the thing, the cause and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class GreenpipeError(Exception):
    """An error with a message meant for the person running greenpipe.

    The CLI and every stage's ``main()`` print it without a traceback and exit
    with status 2; anything else is a bug and keeps its traceback.
    """


class ParamsError(GreenpipeError):
    """params.yaml holds a value greenpipe cannot use."""


class DataError(GreenpipeError):
    """Input data is missing, corrupt or laid out differently than expected."""


class ToolchainMissing(GreenpipeError):
    """An optional toolchain (Vitis AI, CUDA, XRT, ...) is not installed here."""


# -- a pydantic ValidationError as one ParamsError, a line per bad key ----------------------------------

UNKNOWN_KEY = "unknown key (check the spelling against params.yaml in the repository)"
UNKNOWN_VARIANT_KEY = "unknown key for this variant (check the spelling against its config in greenpipe/quant/)"


def _describe(error: Any, key: str, unknown_key: str) -> str:
    loc = ".".join("validate" if p == "validate_" else str(p) for p in error["loc"])
    where = ".".join(k for k in (key, loc) if k)
    shown = "(missing)" if error["type"] == "missing" else repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    msg = unknown_key if error["type"] == "extra_forbidden" else error["msg"]
    return f"  {where} = {shown}: {msg}"


def invalid_params(exc: ValidationError, source: str = "params.yaml", key: str = "",
                   unknown_key: str = UNKNOWN_KEY) -> ParamsError:
    """A ParamsError listing every error of ``exc``, one line each: ``  <key>.<loc> = <value>: <why>``.

    ``key`` is the dotted key of the mapping ``exc`` came from (empty: the whole
    file); ``unknown_key`` replaces pydantic's message for a key the type lacks.
    """
    lines = "\n".join(_describe(e, key, unknown_key) for e in exc.errors())
    where = f" in {key}" if key else ""
    return ParamsError(f"{source}: {exc.error_count()} invalid value(s){where}:\n{lines}")
