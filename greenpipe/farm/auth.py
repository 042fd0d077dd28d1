"""The farm's secrets: the Prefect API's basic-auth string and each device host's result-signing key.

    secrets = FarmSecrets.load_or_create(state_dir, hosts)   # once per install; file mode 0600
    with api_settings(api_url, secrets.api_auth):            # this process talks to the authenticated API
        ...
    env = {API_AUTH_ENV: secrets.api_auth}                    # a child process: environment, never argv

Both kinds of secret are generated here (``secrets`` module), written only to files of mode 0600 and
handed to child processes through their environment (``/proc/<pid>/environ`` is readable by the owner
only; ``/proc/<pid>/cmdline`` by everyone), never on a command line. The Prefect server is given the
auth string as ``PREFECT_SERVER_API_AUTH_STRING``; its clients (workers, flow runs, the build host) as
``PREFECT_API_AUTH_STRING``. A host's signing key is known to that host and to the controller, nobody
else: see :mod:`greenpipe.farm.results`.

Where the controller finds them outside the loopback stack: ``PREFECT_API_AUTH_STRING`` (environment or
Prefect profile) and ``GREENPIPE_FARM_HOST_KEYS``, the path of a 0600 JSON file ``{host: hex key}``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from greenpipe.errors import GreenpipeError

SECRETS_FILE = "secrets.json"
API_AUTH_ENV = "PREFECT_API_AUTH_STRING"  # client side (Prefect's own setting)
SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"  # server side (Prefect's own setting)
HOST_KEYS_ENV = "GREENPIPE_FARM_HOST_KEYS"  # controller: path of a 0600 JSON file {host: hex key}
AGENT_KEY_ENV = "GREENPIPE_AGENT_KEY_FILE"  # device host: path of its own 0600 key file
AUTH_USER = "greenpipe"


def new_api_auth() -> str:
    """A fresh ``user:password`` for Prefect's basic auth (256 random bits)."""
    return f"{AUTH_USER}:{secrets.token_urlsafe(32)}"


def new_host_key() -> str:
    """A fresh HMAC-SHA256 key for one host, as 64 hex digits."""
    return secrets.token_hex(32)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_private(path: str | Path, what: str) -> str:
    """The text of a secret file; GreenpipeError when it is missing or others may read it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        raise GreenpipeError(f"{what}: {path} does not exist. Create it (mode 0600) or fix the path.") from None
    except OSError as e:
        raise GreenpipeError(f"{what}: cannot read {path} ({e.strerror}); fix its owner or mode.") from None
    if stat.S_IMODE(mode) & 0o077:
        raise GreenpipeError(
            f"{what}: {path} has mode {stat.S_IMODE(mode):04o}, so other users can read a secret. "
            f"Run `chmod 600 {path}` (and replace the secret if others may have read it)."
        )
    return text.strip()


@dataclass(frozen=True)
class FarmSecrets:
    """The API auth string and the host keys of one install (the controller's view: every host's key)."""

    api_auth: str = field(repr=False)
    host_keys: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, state_dir: str | Path) -> FarmSecrets:
        """The secrets in ``state_dir/secrets.json``."""
        path = Path(state_dir) / SECRETS_FILE
        text = read_private(path, "farm secrets")
        try:
            d = json.loads(text)
            return cls(str(d["api_auth"]), {str(h): str(k) for h, k in d.get("host_keys", {}).items()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise GreenpipeError(
                f"farm secrets: {path} is not what greenpipe writes ({e!r}). Delete it and start the farm "
                "again (`greenpipe farm up` makes new secrets; device hosts then need their new keys)."
            ) from None

    @classmethod
    def load_or_create(cls, state_dir: str | Path, hosts: list[str] | tuple[str, ...] = ()) -> FarmSecrets:
        """The install's secrets, created on first use; a key is added for each host that has none."""
        path = Path(state_dir) / SECRETS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        have = cls.load(state_dir) if path.exists() else cls(new_api_auth())
        keys = {**have.host_keys, **{h: new_host_key() for h in hosts if h not in have.host_keys}}
        out = cls(have.api_auth, keys)
        if out != have or not path.exists():
            write_private(path, json.dumps({"api_auth": out.api_auth, "host_keys": keys}, indent=2) + "\n")
        return out

    def write_host_key(self, host: str, path: Path) -> Path:
        """Write ``host``'s key alone to ``path`` (0600): what that host's worker is given."""
        write_private(path, self.host_keys[host] + "\n")
        return path


def host_keys_from_env() -> dict[str, str] | None:
    """The controller's host keys from ``GREENPIPE_FARM_HOST_KEYS`` (None when it is not set)."""
    path = os.environ.get(HOST_KEYS_ENV)
    if not path:
        return None
    try:
        keys = json.loads(read_private(path, HOST_KEYS_ENV))
        return {str(h): str(k) for h, k in keys.items()}
    except (ValueError, AttributeError) as e:
        raise GreenpipeError(
            f"{HOST_KEYS_ENV}: {path} must hold a JSON object {{host: hex key}} ({e!r}); fix the file."
        ) from None


def api_auth_from_env() -> str | None:
    """The client auth string from ``PREFECT_API_AUTH_STRING`` or the active Prefect profile."""
    if os.environ.get(API_AUTH_ENV):
        return os.environ[API_AUTH_ENV]
    from prefect.settings import PREFECT_API_AUTH_STRING

    return PREFECT_API_AUTH_STRING.value() or None


@contextmanager
def api_settings(api_url: str, api_auth: str | None, client_retries: int | None = None) -> Iterator[None]:
    """Prefect settings for this process that reach ``api_url`` with ``api_auth`` (Prefect reads its
    environment once, at import, so a later ``os.environ`` change would not reach it); ``client_retries``
    bounds how often Prefect's client retries a failed request (its default, 5 with backoff, waits
    about 75 s for a server that is gone)."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING, PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings,
    )  # fmt: skip

    updates = {PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: api_auth}
    if client_retries is not None:
        updates[PREFECT_CLIENT_MAX_RETRIES] = client_retries
    with temporary_settings(updates=updates):
        yield
