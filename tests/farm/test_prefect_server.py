"""The loopback Prefect server starts, answers the client, and stops cleanly."""

import json

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from greenpipe.farm.prefect_server import STATE_FILE, LocalPrefect, api_healthy


def test_server_answers_the_client(prefect_server):
    # Settings are read when prefect is imported: set the URL through Prefect's own override.
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        assert str(client.api_url).rstrip("/") == prefect_server
        assert client.api_healthcheck() is None  # None = healthy
        assert isinstance(client.read_work_pools(), list)


def test_start_stop_leaves_nothing(tmp_path):
    server = LocalPrefect(tmp_path)
    url = server.start()
    assert api_healthy(url)
    assert json.loads((tmp_path / STATE_FILE).read_text())["api_url"] == url
    assert LocalPrefect.api_url_of(tmp_path) == url
    server.stop()
    assert not api_healthy(url)
    assert not (tmp_path / STATE_FILE).exists()
    assert LocalPrefect.api_url_of(tmp_path) is None
