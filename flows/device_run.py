"""Flow ``device_run``: what a device host's Prefect worker runs for one ``deploy@V-D`` or ``soak@V-D`` job.

The deploy and soak stages start it with ``run_deployment`` (greenpipe/farm/client.py); nobody calls it
by hand. To try it on this machine, start the loopback stack (``greenpipe farm up``) and run a deploy or
soak stage whose device has a remote ``host`` (params.yaml shows an example).

The ``stage`` parameter says which job it is (one flow, one deployment per pool, for both):

* ``deploy`` (the default): pull the artifact and the val split from the S3 artifact store (sha256
  verified on download), load the artifact with the device's runtime, run :func:`greenpipe.deploy.measure`
  (the recipe's accuracy eval on the artifact, a Quality record, then MLPerf LoadGen SingleStream and Offline for the
  durations in the job, with LoadGen's verdict: VALID only for a run to the rules' 600 s) and record the host's facts.
* ``soak``: pull the artifact and run :func:`greenpipe.soak.soak_on_host`: the same soak loop as a local
  soak, with the device's runtime and this host's meter, putting every finished window in the result
  store under ``hosts/<host>/results/<flow-run-id>/soak/`` as it closes, each signed with this host's
  key, and resuming from the windows that ``earlier_runs`` (failed attempts of the same soak) stored,
  taking only those that carry this host's signature.

Either way it then uploads the outputs and, last, a ``summary.json`` under
``hosts/<host>/results/<flow-run-id>/`` (a host writes nowhere but below ``hosts/<host>/``),
signed with this host's key (``GREENPIPE_AGENT_KEY_FILE``; :mod:`greenpipe.farm.results`). The stage
takes a result only from a COMPLETED run whose signed summary names that run, so a host that dies
half-way never passes a partial result off as a full one, and nobody without the host's key passes
anything off as its result.

The device side is light: nothing imported here imports torch, TensorFlow or DVC (tests check it). A
host needs greenpipe's ``board`` extra (``pip install 'greenpipe[board]'``) plus its runtime's library.
S3 credentials come from the worker's environment (boto3's chain); the job names bucket, prefix and
endpoint, and ``AWS_ENDPOINT_URL_S3`` in the worker's environment overrides that endpoint. The host's name is ``GREENPIPE_AGENT_HOST`` from the same environment.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger

from greenpipe.bench.loadgen import status
from greenpipe.report.text import num
from greenpipe.runtime.base import host_facts, host_name

# Where a host keeps downloaded artifacts between jobs (content-addressed: a verified copy is reused).
CACHE_ENV = "GREENPIPE_AGENT_CACHE"
# A board has ~2 GB of RAM: a device job must never pull these in.
HEAVY_MODULES = ("torch", "tensorflow", "dvc")
STAGES = ("deploy", "soak")


@flow(name="device-run", persist_result=False, log_prints=False)
def device_run(
    job: dict,
    artifact: dict,
    data: dict | None,
    store: dict,
    stage: str = "deploy",
    earlier_runs: list[str] | None = None,
) -> dict:
    """Measure (``stage="deploy"``) or soak (``"soak"``) one artifact on this host; put the outputs in the store.

    ``job`` is a ``greenpipe.deploy.DeployJob`` or ``greenpipe.soak.SoakJob`` as a dict; ``artifact`` and
    ``data`` are ``ArtifactRef`` dicts (the artifact file, or a per-kernel variant's directory; the
    files the recipe's eval reads, deploy only);
    ``store`` holds ``bucket``, ``prefix``, ``endpoint_url`` (None = boto3's default) and ``region``;
    ``earlier_runs`` are flow runs of the same soak that did not complete (oldest first). Returns the
    summary it uploaded.
    """
    from prefect.runtime import flow_run

    from greenpipe.farm.results import agent_key, sign_summary
    from greenpipe.store import ArtifactRef, ArtifactStore

    if stage not in STAGES:
        raise ValueError(f"device_run: stage {stage!r} is not one of {', '.join(STAGES)}")
    key = agent_key()  # before any work: a host that cannot sign would only waste the run
    log = get_run_logger()
    run_id = str(flow_run.id)
    # This host's own S3 endpoint, where it has one (each loopback host has a server of its own), wins
    # over the one the job names: a host talks to the store it was set up with.
    endpoint_url = os.environ.get("AWS_ENDPOINT_URL_S3") or store.get("endpoint_url")
    s3 = ArtifactStore(store["bucket"], store["prefix"], endpoint_url=endpoint_url, region=store.get("region"))
    # Everything this host writes goes below hosts/<host>/, the only place its key may write.
    own = s3.host_area(host_name())
    art_ref = ArtifactRef.from_dict(artifact)
    cache = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "greenpipe-agent")
    # Named by content: a second job with the same artifact reuses the verified local copy. A kernel
    # manifest travels with its variant's directory (every kernel file beside it).
    where = cache / "artifacts" / art_ref.sha256
    name = Path(job["artifact"]).name
    model = s3.get_dir(art_ref, where) / name if art_ref.kind == "dir" else s3.get_file(art_ref, where / name)
    with tempfile.TemporaryDirectory(prefix=f"greenpipe-{run_id}-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        if stage == "soak":
            from greenpipe.soak import SoakJob, soak_on_host

            spec = SoakJob.from_dict(job)
            log.info("pulled %s (%d bytes); soaking it on %s", model.name, art_ref.size, spec.device)
            metrics = soak_on_host(spec, model, own, run_id, list(earlier_runs or []), Path(tmp) / "ckpt", out,
                                   signer=(host_name(), key))  # fmt: skip
            facts = metrics["host"]
        else:
            from greenpipe.deploy import DeployJob, load_artifact, measure

            spec = DeployJob.from_dict(job)
            data_ref = ArtifactRef.from_dict(data or {})
            val = s3.get_dir(data_ref, cache / "data" / data_ref.sha256)
            log.info("pulled %s (%d bytes) and the val split for %s", model.name, art_ref.size, spec.device)
            runner = load_artifact(spec.recipe, spec.runtime, model, spec.threads, spec.batch)
            facts = host_facts(spec.threads, runner.describe().get("label"))
            metrics = measure(spec, runner, val, out, host=facts)
        outputs = own.put_dir(out)
    # This job process's own high-water mark (Linux reports KiB): what a 2 GB board must hold.
    peak_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    summary = {
        "flow_run_id": run_id,
        "stage": stage,
        "job": spec.to_dict(),
        "metrics": metrics,
        "outputs": outputs.to_dict(),
        "host": facts,
        "job_peak_rss_mb": peak_mb,
        # Proof the device side stayed light: none of these may have been imported by this job.
        "heavy_modules": sorted(m for m in HEAVY_MODULES if m in sys.modules),
        "complete": True,
    }
    # Written last: its presence is what makes the result whole; its signature, what makes it this host's.
    # facts["name"] is $GREENPIPE_AGENT_HOST: this host's name as the controller knows it (devices.<d>.host).
    own.put_json(own.result_key(run_id, "summary.json"), sign_summary(summary, facts["name"], run_id, key))
    if stage == "soak":
        log.info(
            "soak of %s on %s: %d windows, %.1f fps, %s W (%s)", spec.variant, facts["name"],
            metrics["windows_done"], metrics["fps"], num(metrics["avg_w"], ".1f"), metrics["power_source"],
        )  # fmt: skip
    else:
        quality = metrics["quality"]
        log.info(
            "%s on %s: %s %.4g %s, p90 %.2f ms, %.1f fps, LoadGen %s",
            spec.variant, facts["name"], quality["primary"], quality["value"], quality["unit"],
            metrics["p90_ms"], metrics["fps"], status(metrics["loadgen_validity"]),
        )  # fmt: skip
    return summary

