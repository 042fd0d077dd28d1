"""Errors a user can act on: each names the thing, the cause and the fix."""


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
