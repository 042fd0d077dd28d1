"""Signed result sets: what a device host writes last for a run, and how the controller checks it.

    envelope = sign_summary(summary, host, run_id, key)       # on the host (flows/device_run.py)
    body = verify_summary(envelope, host, run_id, keys)       # on the controller, before any download

A run's ``results/<run-id>/summary.json`` is an envelope ``{format, host, run, body, hmac_sha256}``.
``body`` is the summary: the job, the metrics and the ``outputs`` reference, whose sha256 and size name
the directory manifest, which in turn lists every output file's sha256 and size. The HMAC-SHA256 (key:
the host's own, known to it and to the controller only) covers host, run id and body in canonical JSON,
so it vouches for every byte of the result set. The controller takes the host's name from where it sent
the job, never from the envelope.

Limits (bytes) on what the controller reads from a host: :data:`SUMMARY_MAX_BYTES` for the envelope,
:data:`MANIFEST_MAX_BYTES` for the outputs manifest and :data:`OUTPUTS_MAX_BYTES` for all outputs
together; the store streams each object and stops at the size its signed manifest gives.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from pathlib import Path
from typing import Any

from greenpipe.errors import GreenpipeError
from greenpipe.farm.auth import AGENT_KEY_ENV, read_private
from greenpipe.io import jsonable

RESULT_FORMAT = "greenpipe.result/1"
MiB = 1024 * 1024
SUMMARY_MAX_BYTES = 1 * MiB
MANIFEST_MAX_BYTES = 4 * MiB
OUTPUTS_MAX_BYTES = 512 * MiB


class ResultRejected(GreenpipeError):
    """A device host's result set failed a check; nothing of it was taken."""


def canonical(obj: Any) -> bytes:
    """The bytes a signature covers: ``obj`` as sorted, compact JSON (non-finite floats as null)."""
    return json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":")).encode()


def _mac(key_hex: str, host: str, run_id: str, body: Any) -> str:
    return hmac.new(bytes.fromhex(key_hex), canonical({"host": host, "run": run_id, "body": body}),
                    hashlib.sha256).hexdigest()  # fmt: skip


def agent_key() -> str:
    """This device host's signing key, from the 0600 file ``GREENPIPE_AGENT_KEY_FILE`` names."""
    path = os.environ.get(AGENT_KEY_ENV)
    if not path:
        raise GreenpipeError(
            f"This device host has no result-signing key: {AGENT_KEY_ENV} is not set in its worker's "
            "environment, so the controller would refuse its results. Put the key the controller holds for "
            "this host in a 0600 file and set the variable (infra/agent/install.sh does both)."
        )
    key = read_private(Path(path), AGENT_KEY_ENV)
    try:
        bytes.fromhex(key)
    except ValueError:
        raise GreenpipeError(f"{AGENT_KEY_ENV}: {path} must hold the key as hex digits; fix the file.") from None
    return key


def sign_summary(summary: dict[str, Any], host: str, run_id: str, key_hex: str) -> dict[str, Any]:
    """The envelope a host writes as ``summary.json``: the summary, signed with its key."""
    body = jsonable(summary)
    return {"format": RESULT_FORMAT, "host": host, "run": run_id, "body": body,
            "hmac_sha256": _mac(key_hex, host, run_id, body)}  # fmt: skip


def verify_summary(envelope: Any, host: str, run_id: str, keys: dict[str, str],
                   what: str = "summary.json") -> dict[str, Any]:  # fmt: skip
    """The signed summary of ``run_id`` as ``host`` wrote it; ResultRejected naming host and reason else.
    ``what`` names the object in messages (a soak window signs ``<run-id>/<its name>`` as its run)."""
    where = f"result of flow run {run_id} from host {host!r}"
    if host not in keys:
        raise ResultRejected(
            f"{where}: the controller holds no signing key for this host, so nothing it sends can be "
            "trusted. Add its key to the farm's host keys (GREENPIPE_FARM_HOST_KEYS, or the loopback "
            "stack's secrets.json) and run the stage again."
        )
    if not isinstance(envelope, dict) or envelope.get("format") != RESULT_FORMAT:
        raise ResultRejected(f"{where}: {what} is not a signed result set ({RESULT_FORMAT}); rejected.")
    signature = envelope.get("hmac_sha256")
    good = _mac(keys[host], host, run_id, envelope.get("body"))
    if not isinstance(signature, str) or not hmac.compare_digest(signature, good):
        raise ResultRejected(
            f"{where}: bad or missing signature on {what} (not signed with this host's key, or "
            "altered after signing); rejected, nothing downloaded. If the host's key was replaced, give "
            "the controller the new one; otherwise treat the host or the bucket as compromised."
        )
    if envelope.get("host") != host or envelope.get("run") != run_id:
        raise ResultRejected(f"{where}: the envelope names host {envelope.get('host')!r}, run "
                             f"{envelope.get('run')!r}; rejected.")  # fmt: skip
    return envelope["body"]


def check_summary(body: Any, host: str, run_id: str, job: dict[str, Any]) -> None:
    """Check a verified summary's shape and its figures' plausible ranges (the recipe's Quality ranges)."""
    from greenpipe.recipes import get_recipe
    from greenpipe.recipes.base import Quality, check_quality

    where = f"result of flow run {run_id} from host {host!r}"
    if not isinstance(body, dict) or body.get("flow_run_id") != run_id or body.get("complete") is not True:
        raise ResultRejected(f"{where}: summary.json does not describe a complete run of this flow run; rejected.")
    if body.get("job") != job:
        raise ResultRejected(f"{where}: summary.json describes another job (job parameters differ); rejected.")
    metrics, outputs = body.get("metrics"), body.get("outputs")
    if not isinstance(metrics, dict) or not isinstance(outputs, dict) or outputs.get("kind") != "dir":
        raise ResultRejected(f"{where}: summary.json lacks its metrics or its outputs manifest; rejected.")
    size = outputs.get("size")
    if not isinstance(size, int) or not 0 < size <= MANIFEST_MAX_BYTES:
        raise ResultRejected(f"{where}: its outputs manifest claims {size!r} bytes (limit "
                             f"{MANIFEST_MAX_BYTES} bytes); rejected.")  # fmt: skip
    for name in ("fps", "p50_ms", "p90_ms", "p99_ms"):
        v = metrics.get(name)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ResultRejected(f"{where}: metric {name} = {v!r} is not a finite number >= 0; rejected.")
    if job.get("recipe") is None:
        return
    recipe = get_recipe(job["recipe"])
    try:
        flat = {m.name: metrics[m.name] for m in recipe.metrics if m.name in metrics}
        qualities = [Quality(recipe.metrics[0].name, flat, recipe.metrics[0].higher_is_better)]
        if "quality" in metrics:
            qualities.append(Quality.from_dict(metrics["quality"]))
        for quality in qualities:
            check_quality(quality, recipe, where)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ResultRejected(f"{where}: its quality record is malformed ({e!r}); rejected.") from None
    except GreenpipeError as e:
        raise ResultRejected(f"{e}; rejected.") from None
