"""Shared pytest fixtures: real Prefect servers (SQLite) on 127.0.0.1 for the whole test session.

``prefect_server`` yields the API URL of an open server (the build host's own, as ``greenpipe nightly``
starts one). ``farm_prefect`` yields a :class:`FarmServer`: a server that requires the farm's basic auth
and CSRF tokens, as ``greenpipe farm up`` starts it, with the install's secrets. Tests that talk to a
server from this process use ``prefect.settings.temporary_settings`` (for the farm's,
``greenpipe.farm.auth.api_settings``; Prefect reads the environment once, at import) or pass it in a
subprocess's environment; nothing else is changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from greenpipe.farm.auth import FarmSecrets
from greenpipe.farm.prefect_server import LocalPrefect

FARM_HOSTS = ("cpu-host-1", "cpu-host-2", "cpu-host-9")


@dataclass(frozen=True)
class FarmServer:
    api_url: str
    secrets: FarmSecrets
    state_dir: Path  # holds secrets.json and the server's own state
    server: LocalPrefect


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LocalPrefect(tmp_path_factory.mktemp("prefect-server"))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def farm_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FarmServer]:
    state = tmp_path_factory.mktemp("farm-prefect")
    secrets = FarmSecrets.load_or_create(state, FARM_HOSTS)
    server = LocalPrefect(state / "prefect", api_auth=secrets.api_auth)
    url = server.start()
    try:
        yield FarmServer(url, secrets, state, server)
    finally:
        server.stop()
