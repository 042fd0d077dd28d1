"""The build-host side of a remote deploy: an unreachable server, and results taken only when whole."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from greenpipe.farm.client import FarmError, fetch_results, run_remote
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


def _stored_run(store: ArtifactStore, tmp_path: Path, run_id: str, **summary) -> dict:
    outputs = tmp_path / f"outputs-{run_id}"
    (outputs / "samples").mkdir(parents=True)
    (outputs / "eval.json").write_text('{"summary": {}}\n')
    (outputs / "samples" / "img3.png").write_bytes(b"png bytes " + run_id.encode())
    body = {"flow_run_id": run_id, "job": JOB.to_dict(), "metrics": {"psnr": 30.0},
            "outputs": store.put_dir(outputs).to_dict(), "complete": True, **summary}  # fmt: skip
    store.put_json(store.result_key(run_id, "summary.json"), body)
    return body


def test_only_a_whole_result_of_this_job_is_taken(local_s3, tmp_path):
    endpoint, bucket = local_s3
    store = ArtifactStore.from_endpoint(endpoint, bucket, "client-tests")
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("the previous outputs")

    _stored_run(store, tmp_path, "run-ok")
    assert fetch_results(store, "run-ok", JOB, out) == {"psnr": 30.0}
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["eval.json", "img3.png"]

    # A summary that is not whole, or is some other run's or job's, is refused; `out` stays as it was.
    _stored_run(store, tmp_path, "run-partial", complete=False)
    _stored_run(store, tmp_path, "run-other", flow_run_id="run-ok")
    _stored_run(store, tmp_path, "run-job", job={**JOB.to_dict(), "variant": "fp32"})
    for run_id in ("run-partial", "run-other", "run-job"):
        with pytest.raises(FarmError, match="does not describe this job"):
            fetch_results(store, run_id, JOB, out)
    assert (out / "samples" / "img3.png").read_bytes() == b"png bytes run-ok"

    # A damaged output object fails its checksum; nothing half-downloaded replaces `out`.
    body = _stored_run(store, tmp_path, "run-damaged")
    manifest = store.get_json(body["outputs"]["key"].split("/", 1)[1])
    png_sha = manifest["files"]["samples/img3.png"]["sha256"]
    store.client.put_object(Bucket=bucket, Key=store.cas_key(png_sha), Body=b"damaged")
    with pytest.raises(ChecksumMismatch):
        fetch_results(store, "run-damaged", JOB, out)
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
