"""Shared pytest fixtures: a real loopback S3 server (``rclone serve s3``) for the whole test session.

Register them in conftest.py with ``pytest_plugins = ["tests.s3fixture"]`` (or import both names).
``local_s3`` yields ``(endpoint, bucket)`` with the bucket created; ``local_s3_server`` is the LocalS3
behind it, for tests that look at its folder or keys file. Everything lives in pytest's tmp dir.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greenpipe.farm.s3server import LocalS3, S3Endpoint
from greenpipe.store import ArtifactStore

BUCKET = "greenpipe-test"


@pytest.fixture(scope="session")
def local_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    base = tmp_path_factory.mktemp("local-s3")
    server = LocalS3(base / "root", base / "state")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def local_s3(local_s3_server: LocalS3) -> Iterator[tuple[S3Endpoint, str]]:
    endpoint = local_s3_server.endpoint
    ArtifactStore.from_endpoint(endpoint, BUCKET).ensure_bucket()
    yield endpoint, BUCKET
