"""Running a flow of ``flows/`` for the ``greenpipe`` command: as its own process, ``python -m flows.<flow>``.

Flows compose the library, so the library never imports them; ``greenpipe run`` and ``greenpipe
nightly run | serve`` start the flow's module from the current directory (the greenpipe checkout),
as they start ``dvc``. Its output passes straight through.
"""

from __future__ import annotations

import importlib.machinery
import os
import signal
import subprocess
import sys
import threading

from greenpipe.errors import GreenpipeError


def flow_command(flow: str, *args: str, hint: str = "") -> list[str]:
    """The command that runs ``flows/<flow>.py`` with ``args``; GreenpipeError when it is not found from here."""
    # What `python -m` searches: the current directory first, then this interpreter's path.
    if importlib.machinery.PathFinder.find_spec("flows", [os.getcwd(), *sys.path[1:]]) is None:
        raise GreenpipeError(
            f"flows/{flow}.py is not importable from here ({os.getcwd()}): run greenpipe from the "
            f"greenpipe repository root{hint}."
        )
    return [sys.executable, "-m", f"flows.{flow}", *args]


def run_flow(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``command`` (from :func:`flow_command`) until it ends; return its exit status (128 + N for signal N).
    ``env`` replaces the inherited environment (None: this process's).

    Ctrl-C reaches the flow itself (same process group), which stops as it does on its own; a second
    Ctrl-C, or SIGTERM sent to this process, terminates it.
    """
    proc = subprocess.Popen(command, env=env)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate()) if main else None
    interrupted = False
    try:
        while True:
            try:
                status = proc.wait()
                return status if status >= 0 else 128 - status
            except KeyboardInterrupt:
                if interrupted:
                    proc.terminate()
                interrupted = True
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
