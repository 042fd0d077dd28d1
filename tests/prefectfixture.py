"""Shared pytest fixture: a real Prefect server (SQLite) on 127.0.0.1 for the whole test session.

``prefect_server`` yields the API URL. Tests that talk to it from this process use
``prefect.settings.temporary_settings({PREFECT_API_URL: url})`` (Prefect reads the environment once, at
import) or pass it in a subprocess's environment; nothing else is changed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greenpipe.farm.prefect_server import LocalPrefect


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LocalPrefect(tmp_path_factory.mktemp("prefect-server"))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
