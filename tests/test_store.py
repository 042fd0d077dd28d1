"""The content-addressed artifact store against a real loopback S3 server (no mocks)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.farm.s3server import LocalS3, S3Endpoint
from greenpipe.store import (
    MANIFEST_FORMAT,
    ArtifactNotFound,
    ArtifactRef,
    ArtifactStore,
    ChecksumMismatch,
    MiB,
    StoreError,
    sha256_file,
)


WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}


@pytest.fixture
def store(local_s3: tuple[S3Endpoint, str]) -> ArtifactStore:
    endpoint, bucket = local_s3
    # A prefix per test keeps content-addressed dedup from leaking between tests.
    return ArtifactStore.from_endpoint(endpoint, bucket, prefix=f"t/{uuid.uuid4().hex[:12]}")


@contextmanager
def s3_calls(store: ArtifactStore) -> Iterator[Counter[str]]:
    """Count the S3 operations the store's client sends, by name."""
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    store.client.meta.events.register("before-call.s3.*", hook)
    try:
        yield calls
    finally:
        store.client.meta.events.unregister("before-call.s3.*", hook)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_file_round_trip_and_ref_serialises(store: ArtifactStore, tmp_path: Path) -> None:
    src = _write(tmp_path / "model.onnx", os.urandom(100_000))
    ref = store.put_file(src)
    sha, size = sha256_file(src)
    assert (ref.sha256, ref.size, ref.kind) == (sha, size, "file")
    assert ref.key == f"{store.prefix}/cas/sha256/{sha[:2]}/{sha}"
    assert ArtifactRef.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref
    head = store.client.head_object(Bucket=store.bucket, Key=ref.key)
    assert {k.lower(): v for k, v in head["Metadata"].items()}["sha256"] == sha

    out = store.get_file(ref.to_dict(), tmp_path / "down" / "model.onnx")
    assert out.read_bytes() == src.read_bytes()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_dir_round_trip_is_content_addressed(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "compiled"
    _write(src / "model.xmodel", b"x" * 5000)
    _write(src / "meta" / "arch.json", b'{"fingerprint": "0x1"}')
    _write(src / "meta" / "copy.json", b'{"fingerprint": "0x1"}')  # same content twice: stored once
    _write(src / "empty.txt", b"")
    ref = store.put_dir(src)
    assert ref.kind == "dir"
    manifest = json.loads(store.client.get_object(Bucket=store.bucket, Key=ref.key)["Body"].read())
    assert manifest["format"] == MANIFEST_FORMAT
    assert sorted(manifest["files"]) == ["empty.txt", "meta/arch.json", "meta/copy.json", "model.xmodel"]
    assert len([k for k in store.list("cas/")]) == 4  # 3 distinct contents + the manifest

    out = store.get_dir(ArtifactRef.from_dict(ref.to_dict()), tmp_path / "out")
    for rel in manifest["files"]:
        assert (out / rel).read_bytes() == (src / rel).read_bytes()

    copy = tmp_path / "again"
    for rel in manifest["files"]:
        _write(copy / rel, (src / rel).read_bytes())
    assert store.put_dir(copy) == ref  # the same tree anywhere gives the same ref


def test_second_put_does_not_upload(store: ArtifactStore, tmp_path: Path) -> None:
    src = _write(tmp_path / "weights.bin", os.urandom(50_000))
    with s3_calls(store) as first:
        ref = store.put_file(src)
    assert first["PutObject"] == 1
    with s3_calls(store) as second:
        assert store.put_file(src) == ref
        assert store.put_file(_write(tmp_path / "renamed.bin", src.read_bytes())) == ref
    assert not WRITES & set(second) and second["HeadObject"] == 2
    assert (store.stats.uploaded, store.stats.skipped) == (1, 2)

    tree = tmp_path / "tree"
    _write(tree / "a.bin", os.urandom(1000))
    store.put_dir(tree)
    with s3_calls(store) as again:
        store.put_dir(tree)
    assert not WRITES & set(again)


def test_large_file_goes_up_in_parts(local_s3: tuple[S3Endpoint, str], tmp_path: Path) -> None:
    endpoint, bucket = local_s3
    # 5 MiB is the smallest part boto3 accepts; 12 MiB then makes three parts.
    store = ArtifactStore.from_endpoint(
        endpoint, bucket, prefix=f"t/{uuid.uuid4().hex[:12]}",
        multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
    )  # fmt: skip
    etags: list[str] = []
    store.client.meta.events.register(
        "after-call.s3.CompleteMultipartUpload", lambda parsed, **_: etags.append(parsed["ETag"])
    )
    src = _write(tmp_path / "big.bin", os.urandom(12 * MiB))
    with s3_calls(store) as calls:
        ref = store.put_file(src)
    assert calls["CreateMultipartUpload"] == 1 and calls["UploadPart"] == 3 and calls["PutObject"] == 0
    assert etags[0].strip('"').endswith("-3")  # S3's mark of an object assembled from 3 parts
    out = store.get_file(ref, tmp_path / "big.out")
    assert sha256_file(out) == (ref.sha256, ref.size)


def test_object_overwritten_through_server_is_rejected(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put_file(_write(tmp_path / "m.bin", b"good bytes" * 100))
    store.client.put_object(Bucket=store.bucket, Key=ref.key, Body=b"evil")
    dest = tmp_path / "out" / "m.bin"
    with pytest.raises(ChecksumMismatch) as err:
        store.get_file(ref, dest)
    e = err.value
    assert (e.key, e.expected, e.expected_size, e.actual_size) == (ref.key, ref.sha256, ref.size, 4)
    assert ref.key in str(e) and ref.sha256 in str(e) and e.actual in str(e)
    assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-written, nothing reused


def test_object_corrupted_on_disk_is_rejected_then_repaired(
    store: ArtifactStore, local_s3_server: LocalS3, tmp_path: Path
) -> None:
    src = _write(tmp_path / "m.bin", os.urandom(20_000))
    ref = store.put_file(src)
    on_disk = local_s3_server.root / store.bucket / ref.key
    data = bytearray(on_disk.read_bytes())
    data[1234] ^= 0xFF  # same size, one flipped byte: only the hash can tell
    on_disk.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match=ref.sha256):
        store.get_file(ref, tmp_path / "out.bin")

    store.put_file(src, force=True)
    assert store.get_file(ref, tmp_path / "out.bin").read_bytes() == src.read_bytes()


def test_verified_local_copy_is_reused_and_a_wrong_one_replaced(store: ArtifactStore, tmp_path: Path) -> None:
    src = _write(tmp_path / "m.bin", os.urandom(10_000))
    ref = store.put_file(src)
    dest = store.get_file(ref, tmp_path / "cache" / "m.bin")
    with s3_calls(store) as calls:
        store.get_file(ref, dest)
    assert not calls and store.stats.reused == 1

    dest.write_bytes(b"stale" * 2000)  # same size, different bytes
    with s3_calls(store) as calls:
        store.get_file(ref, dest)
    assert calls["GetObject"] >= 1 and dest.read_bytes() == src.read_bytes()


def test_unreachable_endpoint_names_the_url_quickly(local_s3: tuple[S3Endpoint, str]) -> None:
    endpoint, bucket = local_s3
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    dead = S3Endpoint(url, endpoint.access_key, endpoint.secret_key)
    store = ArtifactStore.from_endpoint(dead, bucket, connect_timeout_s=1, max_attempts=1)
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        store.ensure_bucket()
    assert time.monotonic() - t0 < 5
    assert url in str(err.value) and "LocalS3" in str(err.value)
    with pytest.raises(StoreError, match=url):
        store.get_json("results/job-1/metrics.json")


def test_no_credentials_says_which_variables(
    local_s3: tuple[S3Endpoint, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, bucket = local_s3
    for var in list(os.environ):
        if var.startswith("AWS_") and var != "AWS_CA_BUNDLE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no 1 s wait on an instance-metadata probe
    store = ArtifactStore(bucket, endpoint_url=endpoint.url, region="us-east-1")
    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID") as err:
        store.get_json("results/x/y.json")
    assert endpoint.url in str(err.value)

    with pytest.raises(StoreError, match="'nobody'"):
        ArtifactStore(bucket, endpoint_url=endpoint.url, profile="nobody")


def test_missing_bucket_and_missing_object(local_s3: tuple[S3Endpoint, str], tmp_path: Path) -> None:
    endpoint, bucket = local_s3
    nowhere = ArtifactStore.from_endpoint(endpoint, "no-such-bucket")
    src = _write(tmp_path / "a.bin", b"abc")
    for call in (lambda: nowhere.put_file(src), lambda: nowhere.get_json("results/j/m.json")):
        with pytest.raises(StoreError, match="'no-such-bucket' does not exist.*ensure_bucket"):
            call()

    store = ArtifactStore.from_endpoint(endpoint, bucket)
    ghost = ArtifactRef(store.cas_key("0" * 64), "0" * 64, 3)
    with pytest.raises(ArtifactNotFound, match=ghost.key):
        store.get_file(ghost, tmp_path / "ghost.bin")
    assert not (tmp_path / "ghost.bin").exists()


def test_ensure_bucket_creates_once(local_s3: tuple[S3Endpoint, str], local_s3_server: LocalS3) -> None:
    endpoint, _ = local_s3
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    store = ArtifactStore.from_endpoint(endpoint, name)
    store.ensure_bucket()
    store.ensure_bucket()
    assert (local_s3_server.root / name).is_dir()


def test_json_results_and_listing(store: ArtifactStore) -> None:
    metrics = {"psnr_db": np.float32(31.5), "latency_ms": [1.0, 2.5], "frames": np.int64(3)}
    assert store.result_key("job-7", "metrics.json") == "results/job-7/metrics.json"
    full = store.put_json(store.result_key("job-7", "metrics.json"), metrics)
    assert full == f"{store.prefix}/results/job-7/metrics.json"
    store.put_json("results/job-7/power.json", {"watts": 12.0})
    store.put_json("results/job-8/metrics.json", {})
    assert store.get_json("results/job-7/metrics.json") == {
        "psnr_db": 31.5,
        "latency_ms": [1.0, 2.5],
        "frames": 3,
    }
    assert store.list("results/job-7/") == ["results/job-7/metrics.json", "results/job-7/power.json"]
    assert len(store.list()) == 3
    with pytest.raises(ArtifactNotFound):
        store.get_json("results/job-9/metrics.json")
    with pytest.raises(StoreError, match="clean relative path"):
        store.put_json("../escape.json", {})
    with pytest.raises(StoreError, match="clean relative path"):
        store.result_key("../job", "x.json")


def test_manifest_cannot_write_outside_dest(store: ArtifactStore, tmp_path: Path) -> None:
    payload = store.put_bytes(b"owned")
    evil = {"format": MANIFEST_FORMAT, "files": {"../evil.txt": {"sha256": payload.sha256, "size": 5}}}
    ref = store.put_bytes(json.dumps(evil).encode())
    with pytest.raises(StoreError, match="clean relative path"):
        store.get_dir(ArtifactRef(ref.key, ref.sha256, ref.size, "dir"), tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_bad_refs_and_wrong_kinds_are_explained(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="sha256"):
        ArtifactRef.from_dict({"key": "k", "sha256": "xyz", "size": 1})
    with pytest.raises(StoreError, match="key, sha256, size"):
        ArtifactRef.from_dict({"sha256": "0" * 64})
    file_ref = store.put_bytes(b"x")
    with pytest.raises(StoreError, match="get_file"):
        store.get_dir(file_ref, tmp_path / "d")
    with pytest.raises(StoreError, match="put_dir"):
        store.put_file(tmp_path)
    assert isinstance(StoreError("x"), GreenpipeError)


def test_progress_bar_is_optional(
    store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write(tmp_path / "p.bin", os.urandom(300_000))
    ref = store.put_file(src, progress=True)
    store.get_file(ref, tmp_path / "p.out", progress=True)
    err = capsys.readouterr().err
    assert "put p.bin" in err and "get p.out" in err
