"""Fault drills on the real loopback servers: a fault mid-way, one clear message, nothing partial taken
for whole, and a rerun that completes.

* the host's S3 server killed (SIGKILL) while the host uploads a result set;
* the stage's output disk full while the controller downloads one (a real 1 MiB tmpfs);
* a device host's worker killed mid-soak: ``test_remote_soak.py`` (this file's last test);
* the Prefect server killed mid-deploy: ``test_remote_deploy.py::test_a_prefect_server_killed_mid_deploy_fails_soon_with_a_clear_message``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time

import pytest

from greenpipe.farm.client import FarmError, fetch_results
from greenpipe.farm.results import sign_summary
from greenpipe.farm.s3server import HostView, LocalS3
from greenpipe.store import MiB, ArtifactStore, StoreError
from tests.farm.test_client import DEV, JOB, KEYS, farm_on, stored_run

HOST = DEV.host
BUCKET, PREFIX = "drills", "greenpipe"


def _upload_result(store: ArtifactStore, outputs, run_id: str) -> None:
    """What a host's ``device_run`` does last: its outputs into its area, then the signed summary."""
    area = store.host_area(HOST)
    ref = area.put_dir(outputs)
    body = {"flow_run_id": run_id, "job": JOB.to_dict(), "metrics": {"psnr": 30.0}, "outputs": ref.to_dict(),
            "complete": True}  # fmt: skip
    area.put_json(area.result_key(run_id, "summary.json"), sign_summary(body, HOST, run_id, KEYS[HOST]))


def _host_store(server: LocalS3) -> ArtifactStore:
    # Parts of 5 MiB, one at a time: the upload takes long enough to be caught mid-way.
    return ArtifactStore.from_endpoint(server.endpoint, BUCKET, PREFIX, multipart_threshold=5 * MiB,
                                       multipart_chunksize=5 * MiB, max_concurrency=1)  # fmt: skip


def _bytes_below(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.slow
def test_an_s3_server_killed_mid_upload_leaves_no_result_and_a_rerun_completes(tmp_path):
    root = tmp_path / "s3-root"
    controller = LocalS3(root, tmp_path / "s3")
    host = LocalS3(root, tmp_path / "s3-host", host_view=HostView(BUCKET, PREFIX, HOST))
    try:
        store = ArtifactStore.from_endpoint(controller.start(), BUCKET, PREFIX)
        store.ensure_bucket()
        host.start()
        outputs = tmp_path / "outputs"
        (outputs / "samples").mkdir(parents=True)
        (outputs / "eval.json").write_text('{"summary": {}}\n')
        for i in range(3):
            (outputs / "samples" / f"big{i}.bin").write_bytes(os.urandom(24 * MiB))
        out = tmp_path / "metrics-out"
        out.mkdir()
        (out / "eval.json").write_text("earlier outputs")

        failed: dict = {}

        def upload() -> None:
            try:
                _upload_result(_host_store(host), outputs, "run-1")
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                failed["error"] = e

        uploading = threading.Thread(target=upload)
        uploading.start()
        area = root / BUCKET / PREFIX / "hosts" / HOST
        deadline = time.monotonic() + 60
        while _bytes_below(area) < 8 * MiB:  # a part or more of the first big file is on disk
            assert uploading.is_alive() and time.monotonic() < deadline, failed
            time.sleep(0.005)
        host._proc.kill()  # SIGKILL mid-upload: the server cannot finish or clean anything up
        uploading.join(timeout=120)
        assert not uploading.is_alive()
        assert isinstance(failed.get("error"), StoreError), failed
        assert "Cannot reach the S3 endpoint" in str(failed["error"])
        host.stop()

        # The summary is written last, so there is none: the controller takes nothing and says so.
        farm = farm_on(store)
        with pytest.raises(FarmError, match="summary.json is not in the store") as err:
            fetch_results(farm, "run-1", JOB, DEV, out)
        assert f"host {HOST!r}" in str(err.value) and "Nothing of it was taken" in str(err.value)
        assert sorted(p.name for p in out.iterdir()) == ["eval.json"]
        assert (out / "eval.json").read_text() == "earlier outputs"

        # The host's server comes back (a new key, a new port); the rerun uploads again and completes.
        host.start()
        _upload_result(_host_store(host), outputs, "run-2")
        assert fetch_results(farm, "run-2", JOB, DEV, out) == {"psnr": 30.0}
        for i in range(3):
            name = f"big{i}.bin"
            assert (out / "samples" / name).read_bytes() == (outputs / "samples" / name).read_bytes()
        # Whatever the kill left under a content name was replaced: every such object is whole.
        for f in (area / "cas").rglob("*"):
            if f.is_file() and re.fullmatch(r"[0-9a-f]{64}", f.name):
                assert hashlib.sha256(f.read_bytes()).hexdigest() == f.name, f
    finally:
        host.stop()
        controller.stop()


def test_an_output_disk_that_fills_mid_download_keeps_the_earlier_outputs_and_a_rerun_completes(
    local_s3, tmp_path, small_disk
):
    """The stage's outputs are on a real 1 MiB tmpfs that fills while the result set comes down."""
    endpoint, bucket = local_s3
    store = ArtifactStore.from_endpoint(endpoint, bucket, "drills-disk")
    farm = farm_on(store)
    out = small_disk / "metrics-out"
    out.mkdir()
    (out / "eval.json").write_text("earlier outputs")
    # Outputs of 600 kB (plus two small files), beside a 500 kB filler: more than the disk holds.
    big = os.urandom(600_000)
    stored_run(store, tmp_path, "run-big", files={"samples/big.bin": big})
    (small_disk / "filler").write_bytes(b"\0" * 500_000)

    with pytest.raises(FarmError) as err:
        fetch_results(farm, "run-big", JOB, DEV, out)
    msg = str(err.value)
    assert f"host {HOST!r}" in msg and "No space left on device" in msg and str(small_disk) in msg, msg
    assert "free space" in msg and "run the stage again" in msg
    assert sorted(p.name for p in out.iterdir()) == ["eval.json"]
    assert (out / "eval.json").read_text() == "earlier outputs"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "metrics-out"]  # no .incoming- left

    (small_disk / "filler").unlink()
    assert fetch_results(farm, "run-big", JOB, DEV, out) == {"psnr": 30.0}
    assert (out / "samples" / "big.bin").read_bytes() == big
