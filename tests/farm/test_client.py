"""The build-host side of a remote deploy: an unreachable server, and results taken only when whole."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from greenpipe.farm.client import Farm, FarmError, fetch_results, run_remote
from greenpipe.farm.results import sign_summary
from greenpipe.params import DeviceParams
from greenpipe.store import ArtifactStore, ChecksumMismatch
from greenpipe.deploy import DeployJob

JOB = DeployJob(
    variant="ptq8", device="cpu-host-1", kind="cpu", target="cpu", runtime="ort", batch=1, threads=2,
    recipe="denoise", multiple=4, input_shape=[1, 3, 32, 32], eval_options={}, eval_max_side=0, single_stream_s=0.3,
    offline_s=0.3, artifact="artifacts/compile/ptq8/cpu/model.onnx", artifact_bytes=1000,
)  # fmt: skip
DEV = DeviceParams(host="cpu-host-1", pool="cpu-hosts", queue="cpu-host-1", timeout_s=5, retries=0)


def test_an_unreachable_prefect_server_fails_at_once_naming_device_pool_and_queue(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # port 9 (discard): nothing listens
    monkeypatch.setenv("GREENPIPE_FARM_BUCKET", "greenpipe")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    t0 = time.monotonic()
    with pytest.raises(FarmError) as err:
        run_remote(JOB, DEV, tmp_path / "model.onnx", tmp_path / "prepared", tmp_path / "out")
    msg = str(err.value)
    assert "device 'cpu-host-1'" in msg and "work pool 'cpu-hosts'" in msg and "queue 'cpu-host-1'" in msg
    assert "cannot reach the Prefect server at http://127.0.0.1:9/api" in msg and "greenpipe farm up" in msg
    assert time.monotonic() - t0 < 30 and not (tmp_path / "out").exists()


KEYS = {"cpu-host-1": "11" * 32, "cpu-host-2": "22" * 32}


def stored_run(store: ArtifactStore, tmp_path: Path, run_id: str, signer: str = "cpu-host-1",
               key: str | None = None, area: str | None = None, files: dict[str, bytes] | None = None,
               **summary) -> dict:  # fmt: skip
    """Put a result set for ``run_id`` in ``store`` as host ``signer`` would (signed with ``key``), in the
    area of host ``area`` (default: the signer's own); ``files`` (relative path: bytes) join its outputs."""
    store = store.host_area(area or signer)
    outputs = tmp_path / f"outputs-{run_id}"
    (outputs / "samples").mkdir(parents=True, exist_ok=True)
    (outputs / "eval.json").write_text('{"summary": {}}\n')
    (outputs / "samples" / "img3.png").write_bytes(b"png bytes " + run_id.encode())
    for rel, data in (files or {}).items():
        (outputs / rel).write_bytes(data)
    body = {"flow_run_id": run_id, "job": JOB.to_dict(), "metrics": {"psnr": 30.0},
            "outputs": store.put_dir(outputs).to_dict(), "complete": True, **summary}  # fmt: skip
    envelope = sign_summary(body, signer, run_id, key or KEYS[signer])
    store.put_json(store.result_key(run_id, "summary.json"), envelope)
    return body


def farm_on(store: ArtifactStore) -> Farm:
    """The controller's view of a farm whose results are in ``store`` (no Prefect server needed to fetch)."""
    return Farm("http://127.0.0.1:9/api", store, "test", None, dict(KEYS))


def test_only_a_whole_result_of_this_job_is_taken(local_s3, tmp_path):
    endpoint, bucket = local_s3
    store = ArtifactStore.from_endpoint(endpoint, bucket, "client-tests")
    farm = farm_on(store)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("the previous outputs")

    stored_run(store, tmp_path, "run-ok")
    assert fetch_results(farm, "run-ok", JOB, DEV, out) == {"psnr": 30.0}
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["eval.json", "img3.png"]

    # A summary that is not whole, or is some other run's or job's, is refused; `out` stays as it was.
    stored_run(store, tmp_path, "run-partial", complete=False)
    stored_run(store, tmp_path, "run-other", flow_run_id="run-ok")
    stored_run(store, tmp_path, "run-job", job={**JOB.to_dict(), "variant": "fp32"})
    for run_id, why in (("run-partial", "complete run"), ("run-other", "complete run"), ("run-job", "another job")):
        with pytest.raises(FarmError, match=why) as err:
            fetch_results(farm, run_id, JOB, DEV, out)
        assert "host 'cpu-host-1'" in str(err.value)
    assert (out / "samples" / "img3.png").read_bytes() == b"png bytes run-ok"

    # A damaged output object fails its checksum; nothing half-downloaded replaces `out`.
    body = stored_run(store, tmp_path, "run-damaged")
    manifest = store.get_json(body["outputs"]["key"].split("/", 1)[1])
    png_sha = manifest["files"]["samples/img3.png"]["sha256"]
    store.client.put_object(Bucket=bucket, Key=store.host_area("cpu-host-1").cas_key(png_sha), Body=b"damaged")
    with pytest.raises(FarmError) as err:
        fetch_results(farm, "run-damaged", JOB, DEV, out)
    assert isinstance(err.value.__cause__, ChecksumMismatch) and "host 'cpu-host-1'" in str(err.value)
    assert (out / "samples" / "img3.png").read_bytes() == b"png bytes run-ok"
    assert [p.name for p in tmp_path.iterdir() if ".incoming-" in p.name] == []


def test_a_job_round_trips_and_a_mismatched_one_names_which_side_to_update():
    from greenpipe.errors import GreenpipeError
    from greenpipe.soak import SoakJob

    assert DeployJob.from_dict(JOB.to_dict()) == JOB
    with pytest.raises(GreenpipeError) as newer:
        DeployJob.from_dict({**JOB.to_dict(), "tiles": 4, "amp": True})
    assert "does not know the job field(s) amp, tiles" in str(newer.value)
    assert "build host that sent the job runs a newer greenpipe" in str(newer.value)
    older = {k: v for k, v in JOB.to_dict().items() if k != "input_shape"}
    with pytest.raises(GreenpipeError, match=r"lacks the field\(s\) input_shape; .* older greenpipe"):
        DeployJob.from_dict(older)
    # A field with a default (self_ensemble) may be absent: a job from before it existed still runs.
    assert DeployJob.from_dict({k: v for k, v in JOB.to_dict().items() if k != "self_ensemble"}) == JOB
    with pytest.raises(GreenpipeError, match="SoakJob: this host's greenpipe does not know"):
        SoakJob.from_dict({"extra": 1})
