"""Flow ``device_run``: what a device host's Prefect worker runs for one ``deploy@V-D`` job.

The deploy stage starts it with ``run_deployment`` (greenpipe/farm/client.py); nobody calls it by hand.
To try it on this machine, start the loopback stack (``greenpipe farm up``) and run a deploy stage whose
device has a remote ``host`` (params.yaml shows an example).

One run: pull the artifact and the val split from the S3 artifact store (sha256 verified on download),
load the artifact with the device's runtime, run :func:`tasks.deploy.measure` (the recipe's accuracy
eval on the artifact, then MLPerf LoadGen SingleStream and Offline for the durations in the job, with
LoadGen's VALID/INVALID), record the host's facts, upload the outputs and then, last, a ``summary.json``
under ``results/<flow-run-id>/``. The stage takes a result only from a COMPLETED run whose summary names
that run, so a host that dies half-way never passes a partial result off as a full one.

The device side is light: nothing imported here imports torch, TensorFlow or DVC (tests check it). A
host needs greenpipe's ``board`` extra (``pip install 'greenpipe[board]'``) plus its runtime's library.
S3 credentials come from the worker's environment (boto3's chain); the job names only bucket, prefix
and endpoint.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

# Where a host keeps downloaded artifacts between jobs (content-addressed: a verified copy is reused).
CACHE_ENV = "GREENPIPE_AGENT_CACHE"
# The name the host serves under (its queue's host): the stack and infra/agent set it for the worker.
HOST_ENV = "GREENPIPE_AGENT_HOST"
# A board has ~2 GB of RAM: a device job must never pull these in.
HEAVY_MODULES = ("torch", "tensorflow", "dvc")


def _run_quiet(argv: list[str]) -> str | None:
    """First lines of a tool's output, or None when it is absent or fails (fingerprints are optional)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return "\n".join(text.splitlines()[:20]) if proc.returncode == 0 and text else None


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def host_facts(threads: int, runner_desc: dict[str, Any]) -> dict[str, Any]:
    """What this host is: its name, CPU, memory, OS, and the XRT / DPU fingerprint where there is one."""
    from greenpipe.runtime import cpu_model

    name = os.environ.get(HOST_ENV) or socket.gethostname()
    cpu = cpu_model()
    return {
        "name": name,
        "hostname": socket.gethostname(),
        "label": f"{name} ({cpu}), {threads} thread{'s' if threads != 1 else ''}",
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "mem_total_mb": _mem_total_mb(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": runner_desc.get("label"),
        "xrt": _run_quiet(["xbutil", "--version"]),  # VCK5000 hosts (XRT)
        "dpu": _run_quiet(["xdputil", "query"]),  # boards with the Vitis AI runtime image
    }


@flow(name="device-run", persist_result=False, log_prints=False)
def device_run(job: dict, artifact: dict, data: dict, store: dict) -> dict:
    """Measure one artifact on this host and put the outputs in the S3 result store.

    ``job`` is a ``tasks.deploy.DeployJob`` as a dict; ``artifact`` and ``data`` are ``ArtifactRef``
    dicts (the artifact file, the val split directory); ``store`` holds ``bucket``, ``prefix``,
    ``endpoint_url`` (None = boto3's default) and ``region``. Returns the summary it uploaded.
    """
    from prefect.runtime import flow_run

    from greenpipe.runtime import load
    from greenpipe.store import ArtifactRef, ArtifactStore
    from tasks.deploy import DeployJob, measure

    log = get_run_logger()
    run_id = str(flow_run.id)
    spec = DeployJob.from_dict(job)
    s3 = ArtifactStore(
        store["bucket"], store["prefix"], endpoint_url=store.get("endpoint_url"), region=store.get("region")
    )
    art_ref, data_ref = ArtifactRef.from_dict(artifact), ArtifactRef.from_dict(data)
    cache = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "greenpipe-agent")
    # Named by content: a second job with the same artifact reuses the verified local copy.
    model = s3.get_file(art_ref, cache / "artifacts" / art_ref.sha256 / Path(spec.artifact).name)
    val = s3.get_dir(data_ref, cache / "data" / data_ref.sha256)
    log.info("pulled %s (%d bytes) and the val split for %s", model.name, art_ref.size, spec.device)

    runner = load(spec.runtime, model, spec.threads, spec.batch)
    facts = host_facts(spec.threads, runner.describe())
    with tempfile.TemporaryDirectory(prefix=f"greenpipe-{run_id}-") as tmp:
        out = Path(tmp)
        metrics = measure(spec, runner, val, out, host=facts)
        outputs = s3.put_dir(out)
    # This job process's own high-water mark (Linux reports KiB): what a 2 GB board must hold.
    peak_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    summary = {
        "flow_run_id": run_id,
        "job": spec.to_dict(),
        "metrics": metrics,
        "outputs": outputs.to_dict(),
        "host": facts,
        "job_peak_rss_mb": peak_mb,
        # Proof the device side stayed light: none of these may have been imported by this job.
        "heavy_modules": sorted(m for m in HEAVY_MODULES if m in sys.modules),
        "complete": True,
    }
    # Written last: its presence is what makes the result whole.
    s3.put_json(s3.result_key(run_id, "summary.json"), summary)
    log.info(
        "%s on %s: PSNR %.3f dB, p90 %.2f ms, %.1f fps, LoadGen %s",
        spec.variant, facts["name"], metrics["psnr"], metrics["p90_ms"], metrics["fps"],
        "VALID" if metrics["loadgen_valid"] else "INVALID",
    )  # fmt: skip
    return summary
