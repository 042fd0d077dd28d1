"""Shared pytest set-up: the loopback S3 server fixtures, telemetry off, a private Prefect home."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

pytest_plugins = ["tests.s3fixture"]
