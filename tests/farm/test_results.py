"""Attacks on the results a device host sends back, against the real loopback S3 server (rclone).

Each test plays the attacker (a forger without keys, another host, a host that lies about sizes or sends
too much) and checks that the controller rejects the result set naming host and reason, before
downloading it, and that nothing of it reaches the stage's output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace

import pytest

from greenpipe.farm.client import FarmError, fetch_results
from greenpipe.farm.results import ResultRejected, sign_summary
from greenpipe.soak import StoreSeries, stored_soak
from greenpipe.store import MiB, ArtifactStore
from tests.farm.test_client import DEV, JOB, KEYS, farm_on, stored_run

DEV_B = DEV.model_copy(update={"host": "cpu-host-2", "queue": "cpu-host-2"})


@pytest.fixture
def store(local_s3, request) -> ArtifactStore:
    endpoint, bucket = local_s3
    return ArtifactStore.from_endpoint(endpoint, bucket, f"results-tests/{request.node.name}")


def _area(store: ArtifactStore, host: str = "cpu-host-1") -> ArtifactStore:
    """Where the controller reads ``host``'s results (what the bucket's admin key, unlike a host's, can
    write into for any host: these tests play an attacker who has it)."""
    return store.host_area(host)


@pytest.fixture
def out(tmp_path):
    out = tmp_path / "metrics-out"
    out.mkdir()
    (out / "eval.json").write_text("earlier outputs")
    return out


def _untouched(out) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["eval.json"]
    assert (out / "eval.json").read_text() == "earlier outputs"
    assert not [p for p in out.parent.iterdir() if ".incoming-" in p.name]


def test_a_forged_summary_without_the_hosts_key_is_rejected(store, tmp_path, out):
    farm = farm_on(store)
    # Unsigned (as a host wrote results before signing existed), primary metric 99 dB.
    body = stored_run(store, tmp_path, "run-forged", metrics={"psnr": 99.0})
    _area(store).put_json(store.result_key("run-forged", "summary.json"), body)
    with pytest.raises(FarmError, match="summary.json is not a signed result set") as err:
        fetch_results(farm, "run-forged", JOB, DEV, out)
    assert "host 'cpu-host-1'" in str(err.value)
    # Signed with a key the controller does not hold for this host.
    stored_run(store, tmp_path, "run-forged-2", key="33" * 32, metrics={"psnr": 99.0})
    with pytest.raises(FarmError, match="bad or missing signature") as err:
        fetch_results(farm, "run-forged-2", JOB, DEV, out)
    assert "host 'cpu-host-1'" in str(err.value)
    # A genuine envelope whose figure was edited after signing.
    stored_run(store, tmp_path, "run-edited")
    env = _area(store).get_json(store.result_key("run-edited", "summary.json"))
    env["body"]["metrics"]["psnr"] = 99.0
    _area(store).put_json(store.result_key("run-edited", "summary.json"), env)
    with pytest.raises(FarmError, match="bad or missing signature"):
        fetch_results(farm, "run-edited", JOB, DEV, out)
    _untouched(out)


def test_host_a_cannot_pass_off_results_as_host_bs(store, tmp_path, out):
    farm = farm_on(store)
    stored_run(store, tmp_path, "run-of-b", signer="cpu-host-2")
    assert fetch_results(farm, "run-of-b", JOB, DEV_B, tmp_path / "b-ok")["psnr"] == 30.0
    # Host A's key cannot write in B's area (test_host_prefixes.py); with the bucket's admin key, an
    # attacker overwrites B's summary with one A signed (A's key: all a compromised host has).
    stored_run(store, tmp_path, "run-of-b", signer="cpu-host-1", area="cpu-host-2", metrics={"psnr": 40.0})
    with pytest.raises(FarmError, match="bad or missing signature") as err:
        fetch_results(farm, "run-of-b", JOB, DEV_B, out)
    assert "host 'cpu-host-2'" in str(err.value)
    # ... or claims to be B in the envelope, still signing with its own key.
    b = _area(store, "cpu-host-2")
    env = b.get_json(store.result_key("run-of-b", "summary.json"))
    forged = sign_summary(env["body"], "cpu-host-2", "run-of-b", KEYS["cpu-host-1"])
    b.put_json(store.result_key("run-of-b", "summary.json"), forged)
    with pytest.raises(FarmError, match="bad or missing signature"):
        fetch_results(farm, "run-of-b", JOB, DEV_B, out)
    # A's genuine run replayed as another run id of B's is refused too (the run id is signed).
    stored_run(store, tmp_path, "run-of-a", signer="cpu-host-1")
    env = _area(store).get_json(store.result_key("run-of-a", "summary.json"))
    b.put_json(store.result_key("run-b-2", "summary.json"), env)
    with pytest.raises(FarmError, match="bad or missing signature"):
        fetch_results(farm, "run-b-2", JOB, DEV_B, out)
    _untouched(out)


def _signed_outputs(store: ArtifactStore, run_id: str, files: dict, body_bytes: dict[str, bytes]) -> None:
    """A result set whose manifest is ``files`` and whose objects hold ``body_bytes`` (by sha), signed."""
    for sha, data in body_bytes.items():
        store.client.put_object(Bucket=store.bucket, Key=store.cas_key(sha), Body=data)
    manifest = json.dumps({"format": "greenpipe.dir/1", "files": files}, sort_keys=True, separators=(",", ":"))
    outputs = replace(store.put_bytes(manifest.encode()), kind="dir")
    body = {"flow_run_id": run_id, "job": JOB.to_dict(), "metrics": {"psnr": 30.0},
            "outputs": outputs.to_dict(), "complete": True}  # fmt: skip
    _area(store).put_json(store.result_key(run_id, "summary.json"),
                          sign_summary(body, "cpu-host-1", run_id, KEYS["cpu-host-1"]))  # fmt: skip


def test_a_manifest_that_lies_about_sizes_is_caught_before_the_download(store, tmp_path, out):
    """The host signs a manifest that says 10 bytes and stores 8 MiB under that name."""
    farm = farm_on(store)
    small = b"0123456789"
    sha = hashlib.sha256(small).hexdigest()
    _signed_outputs(store, "run-liar", {"eval.json": {"sha256": sha, "size": len(small)}}, {sha: os.urandom(8 * MiB)})
    before = farm.store.stats.bytes_down
    with pytest.raises(FarmError, match="is 8388608 bytes, but its reference") as err:
        fetch_results(farm, "run-liar", JOB, DEV, out)
    assert "host 'cpu-host-1'" in str(err.value) and "nothing was downloaded" in str(err.value)
    assert farm.store.stats.bytes_down - before < 64 * 1024  # the summary and the manifest, not the 8 MiB
    _untouched(out)


def test_oversize_results_are_refused_before_download(store, tmp_path, out, monkeypatch):
    farm = farm_on(store)
    # A summary.json past the limit: read up to the limit, not whole.
    monkeypatch.setattr("greenpipe.farm.client.SUMMARY_MAX_BYTES", 64 * 1024)
    store.client.put_object(Bucket=store.bucket, Key=_area(store).key(store.result_key("run-huge", "summary.json")),
                            Body=b"{" + b" " * (4 * MiB) + b"}")  # fmt: skip
    before = farm.store.stats.bytes_down
    with pytest.raises(FarmError, match="larger than the 65536 bytes allowed") as err:
        fetch_results(farm, "run-huge", JOB, DEV, out)
    assert "host 'cpu-host-1'" in str(err.value) and farm.store.stats.bytes_down == before
    # Honest outputs, but more than the controller takes from one run: refused from the signed manifest.
    monkeypatch.setattr("greenpipe.farm.client.OUTPUTS_MAX_BYTES", 1 * MiB)
    data = os.urandom(2 * MiB)
    sha = hashlib.sha256(data).hexdigest()
    _signed_outputs(store, "run-big", {"samples/big.bin": {"sha256": sha, "size": len(data)}}, {sha: data})
    with pytest.raises(FarmError, match="over the limit of 1048576 bytes; nothing was downloaded"):
        fetch_results(farm, "run-big", JOB, DEV, out)
    _untouched(out)


def test_a_signed_but_implausible_figure_is_rejected_by_the_recipes_range(store, tmp_path, out):
    """A compromised host signs with its own key: the recipe's plausible ranges still apply."""
    farm = farm_on(store)
    stored_run(store, tmp_path, "run-implausible", metrics={"psnr": 150.0})
    with pytest.raises(FarmError, match=r"metric psnr = 150 is outside its plausible range \[0, 100\] dB"):
        fetch_results(farm, "run-implausible", JOB, DEV, out)
    stored_run(store, tmp_path, "run-nan", metrics={"psnr": 30.0, "fps": "fast"})
    with pytest.raises(FarmError, match="metric fps = 'fast' is not a finite number"):
        fetch_results(farm, "run-nan", JOB, DEV, out)
    _untouched(out)


def test_multipart_uploads_and_ranged_downloads_round_trip(local_s3, tmp_path):
    """Above the multipart threshold both ways: a multipart upload, and a single PUT fetched in ranges."""
    endpoint, bucket = local_s3
    small = dict(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    parts = ArtifactStore.from_endpoint(endpoint, bucket, "multipart-tests", **small)
    whole = ArtifactStore.from_endpoint(endpoint, bucket, "multipart-tests", multipart_threshold=1024 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MiB + 123))
    ref = parts.put_file(src, force=True)  # three parts
    assert whole.get_file(ref, tmp_path / "a.bin").read_bytes() == src.read_bytes()
    ref = whole.put_file(src, force=True)  # one PUT, then ranged GETs
    assert parts.get_file(ref, tmp_path / "b.bin").read_bytes() == src.read_bytes()


def test_soak_windows_are_taken_only_with_the_hosts_signature(store):
    """A soak's stored windows (what a retry resumes from and --report-partial reports) are signed one by
    one, bound to run and name: edited, unsigned, moved or another host's records reject the series."""
    area = _area(store)
    signed = StoreSeries(area, "run-soak", "soak/", strict=True, signer=("cpu-host-1", KEYS["cpu-host-1"]))
    header = {"kind": "header", "context": {"variant": "ptq8"}}
    window = {"kind": "window", "phase": "measure", "index": 0, "fps": 100.0}
    signed(header)
    signed(window)
    verify = ("cpu-host-1", dict(KEYS))
    assert stored_soak(area, ["run-soak"], verify) == ("run-soak", [header, window])
    key = area.result_key("run-soak", "soak/00001-window.json")
    genuine = area.get_json(key)

    edited = {**genuine, "body": {**window, "fps": 9999.0}}
    unsigned = window
    moved = area.get_json(area.result_key("run-soak", "soak/00000-header.json"))  # a genuine record, wrong name
    other_host = sign_summary(window, "cpu-host-2", "run-soak/soak/00001-window.json", KEYS["cpu-host-2"])
    for forged, why in ((edited, "bad or missing signature"), (unsigned, "is not a signed result set"),
                        (moved, "bad or missing signature"), (other_host, "bad or missing signature")):  # fmt: skip
        area.put_json(key, forged)
        with pytest.raises(ResultRejected, match=why) as err:
            stored_soak(area, ["run-soak"], verify)
        assert "host 'cpu-host-1'" in str(err.value) and "soak record soak/00001-window.json" in str(err.value)
