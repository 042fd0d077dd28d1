"""A loopback Prefect server for the local stack and the tests: ``prefect server start`` on 127.0.0.1.

    from greenpipe.farm.prefect_server import LocalPrefect

    with LocalPrefect(state_dir=Path(".greenpipe/state"), api_auth=auth) as api_url:
        env = {"PREFECT_API_URL": api_url, "PREFECT_API_AUTH_STRING": auth}  # workers, flows, `prefect deploy`

The server keeps its SQLite database and its own ``PREFECT_HOME`` under ``state_dir/prefect`` (0700; the
database 0600), sends no telemetry, serves no UI unless asked, and writes its URL and pid to
``state_dir/prefect.json`` so that other processes on this machine (``greenpipe farm status``, workers)
find it with ``LocalPrefect.api_url_of``. Given ``api_auth`` (``user:password``) it requires Prefect's
basic auth on every API call but the health check and turns on its CSRF protection; the auth string
reaches the server through its environment, never its command line.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from greenpipe.errors import GreenpipeError
from greenpipe.farm.auth import API_AUTH_ENV, SERVER_AUTH_ENV
from greenpipe.farm.s3server import _pid_alive, _write_private_json, terminate

STATE_FILE = "prefect.json"
LOG_FILE = "prefect-server.log"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (``prefect server start`` needs a number)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(state_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a Prefect process that belongs to this stack: own home, no telemetry."""
    env = dict(os.environ if base is None else base)
    home = state_dir / "prefect"
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    return env


def api_healthy(api_url: str, timeout_s: float = 1.0) -> bool:
    """Whether the Prefect API at ``api_url`` (…/api) answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout_s) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalPrefect:
    """Start and stop a Prefect server (SQLite) on 127.0.0.1; as a context manager yields its API URL."""

    def __init__(
        self, state_dir: str | Path, port: int | None = None, *, ui: bool = False, startup_timeout_s: float = 90.0,
        api_auth: str | None = None,
    ) -> None:  # fmt: skip
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.api_auth = api_auth
        self.port = port
        self.ui = ui
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None
        self.api_url: str | None = None
        self.startup_s: float | None = None

    @staticmethod
    def api_url_of(state_dir: str | Path) -> str | None:
        """The API URL of a server started from ``state_dir`` that still answers, else None."""
        try:
            info = json.loads((Path(state_dir) / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        url = info.get("api_url")
        if url and _pid_alive(int(info.get("pid", 0))) and api_healthy(url):
            return url
        return None

    def start(self) -> str:
        """Launch the server; return its API URL (``http://127.0.0.1:PORT/api``) once it is healthy."""
        if self._proc is not None and self._proc.poll() is None:
            raise GreenpipeError(f"This LocalPrefect already runs at {self.api_url}: stop() it first.")
        running = self.api_url_of(self.state_dir)
        if running:
            raise GreenpipeError(
                f"A Prefect server already runs from {self.state_dir} ({running}). Use it, stop it "
                "(`greenpipe farm down`), or start this one with another state dir."
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port()
        env = server_env(self.state_dir)
        env["PREFECT_UI_ENABLED"] = "true" if self.ui else "false"
        if self.api_auth:
            # Server side and the server's own clients (its services call the API too).
            env.update({SERVER_AUTH_ENV: self.api_auth, API_AUTH_ENV: self.api_auth,
                        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true"})  # fmt: skip
        home = Path(env["PREFECT_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)  # the database holds every flow run's parameters
        db = home / "prefect.db"
        db.touch(mode=0o600, exist_ok=True)
        os.chmod(db, 0o600)  # SQLite keeps the file's mode; its -wal/-shm files sit in the 0700 home
        log_path = self.state_dir / LOG_FILE
        self._log_fh = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # a Ctrl-C in the caller's terminal goes to the caller, not the server
        )  # fmt: skip
        atexit.register(self.stop)
        url = f"http://127.0.0.1:{port}/api"
        while not api_healthy(url):
            if self._proc.poll() is not None:
                self._fail(log_path, f"exited with status {self._proc.returncode} while starting")
            if time.monotonic() - t0 > self.startup_timeout_s:
                self._fail(log_path, f"was not healthy within {self.startup_timeout_s:g} s")
            time.sleep(0.2)
        self.startup_s = time.monotonic() - t0
        self.api_url = url
        _write_private_json(
            self.state_dir / STATE_FILE,
            {"api_url": url, "pid": self._proc.pid, "log": str(log_path), "started_at": time.time()},
        )
        return url

    @property
    def pid(self) -> int | None:
        """The server process's pid (it leads a session and process group of its own), None when not started."""
        return self._proc.pid if self._proc is not None else None

    def _fail(self, log_path: Path, why: str) -> None:
        self.stop()
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:]) or "(empty)"
        raise GreenpipeError(
            f"The loopback Prefect server (prefect server start on 127.0.0.1:{self.port or 'a free port'}) "
            f"{why}.\nLast lines of {log_path}:\n{tail}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the server (SIGKILL after ``timeout_s`` seconds), wait, and remove its state file."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout_s)
            state = self.state_dir / STATE_FILE
            try:
                if json.loads(state.read_text()).get("pid") == proc.pid:
                    state.unlink()
            except (FileNotFoundError, ValueError):
                pass
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        self.api_url = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
