"""Per-host S3 areas on the loopback stack: each host's key writes only below ``hosts/<host>/``.

Real servers on 127.0.0.1: the controller's ``rclone serve s3`` over the store folder (the session's
``local_s3_server``) and one confined server per device host over the same folder
(``LocalS3(host_view=HostView(...))``), each with its own generated key. Host A tries every write a
compromised host would (into host B's area, over B's summary, into the shared content store, through B's
server or the controller's with its own key) and each is refused with nothing changed on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError

from greenpipe.farm.s3server import HostView, LocalS3
from greenpipe.store import ArtifactNotFound, ArtifactStore, StoreError
from tests.s3fixture import BUCKET

PREFIX = "prefix-tests"


@pytest.fixture(scope="module")
def hosts(local_s3_server, tmp_path_factory):
    """``{host: (LocalS3, its store with 1 try per request)}`` for cpu-host-1 and cpu-host-2."""
    servers = {}
    try:
        for host in ("cpu-host-1", "cpu-host-2"):
            server = LocalS3(local_s3_server.root, tmp_path_factory.mktemp(f"s3-{host}"),
                             host_view=HostView(BUCKET, PREFIX, host))  # fmt: skip
            server.start()
            servers[host] = server
        yield {h: (s, ArtifactStore.from_endpoint(s.endpoint, BUCKET, PREFIX, max_attempts=1))
               for h, s in servers.items()}  # fmt: skip
    finally:
        for s in servers.values():
            s.stop()


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_hosts_key_writes_only_below_its_own_prefix(local_s3, local_s3_server, hosts, tmp_path):
    endpoint, _ = local_s3
    controller = ArtifactStore.from_endpoint(endpoint, BUCKET, PREFIX)
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"the controller's artifact")
    art = controller.put_file(artifact)
    _, a = hosts["cpu-host-1"]
    _, b = hosts["cpu-host-2"]

    # What a host must do: read the shared content store, write (and re-read) in its own area.
    assert a.get_file(art, tmp_path / "got.onnx").read_bytes() == b"the controller's artifact"
    # The controller looks before B writes: another server's later write must still be seen (no stale
    # folder listing in the controller's server).
    with pytest.raises(ArtifactNotFound):
        controller.host_area("cpu-host-2").get_json("results/run-b/summary.json")
    b_summary = b.host_area("cpu-host-2").put_json("results/run-b/summary.json", {"psnr": 30.0})
    a_area = a.host_area("cpu-host-1")
    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "x.png").write_bytes(b"host a's output")
    outputs = a_area.put_dir(out)
    a_area.put_json("results/run-a/summary.json", {"outputs": outputs.to_dict()})
    # The controller reads both hosts' results where they wrote them.
    assert controller.host_area("cpu-host-2").get_json("results/run-b/summary.json") == {"psnr": 30.0}
    assert controller.host_area("cpu-host-1").get_dir(outputs, tmp_path / "c").joinpath(
        "samples", "x.png").read_bytes() == b"host a's output"  # fmt: skip

    before = _files(local_s3_server.root)
    a_as_b = a.host_area("cpu-host-2")
    evil = b'{"psnr": 99.0}'
    attempts = {
        "overwrite B's summary": lambda: a_as_b.put_json("results/run-b/summary.json", {"psnr": 99.0}),
        "new result under B's prefix": lambda: a_as_b.put_json("results/run-x/summary.json", {"psnr": 99.0}),
        "new object in the shared content store": lambda: a.client.put_object(
            Bucket=BUCKET, Key=a.cas_key(hashlib.sha256(evil).hexdigest()), Body=evil),
        "overwrite the controller's artifact": lambda: a.client.put_object(Bucket=BUCKET, Key=art.key, Body=evil),
        "delete the controller's artifact": lambda: a.client.delete_object(Bucket=BUCKET, Key=art.key),
        "write beside the prefixes": lambda: a.client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/x", Body=evil),
        "make another bucket": lambda: a.client.create_bucket(Bucket="elsewhere"),
    }  # fmt: skip
    for what, attempt in attempts.items():
        with pytest.raises((ClientError, StoreError)):
            attempt()
            pytest.fail(f"host A could {what}")
    # B's area is not in A's view at all: S3 answers a delete of a key it cannot see with 204, and
    # nothing is removed (the folder check below).
    a.client.delete_object(Bucket=BUCKET, Key=b_summary)
    # A's key on B's server or on the controller's is not a key there at all.
    a_key = hosts["cpu-host-1"][0].endpoint
    for server in (hosts["cpu-host-2"][0], local_s3_server):
        elsewhere = replace(a_key, url=server.endpoint.url)
        other = ArtifactStore.from_endpoint(elsewhere, BUCKET, PREFIX, max_attempts=1)
        with pytest.raises(StoreError, match=r"refused to let us write JSON .*\((InvalidAccessKeyId|403)\)"):
            other.host_area("cpu-host-2").put_json("results/run-b/summary.json", {"psnr": 99.0})
    assert _files(local_s3_server.root) == before
    assert controller.host_area("cpu-host-2").get_json("results/run-b/summary.json") == {"psnr": 30.0}

