"""The ``device-run/<pool>`` deployment: the Prefect deployment of flows/device_run.py a device host's worker runs.

One deployment per work pool (one pool per device kind); a job is a flow run of it on the device's
queue. Its pull step changes into ``$GREENPIPE_AGENT_DIR``, the greenpipe checkout the host's worker
runs from, so the same deployment serves every host of a pool wherever it keeps its checkout.
:func:`ensure_deployment` is called by the build side before it submits a job
(:mod:`greenpipe.farm.client`) and by the loopback stack when it starts (:mod:`greenpipe.farm.stack`).
"""

from __future__ import annotations

from typing import Any

FLOW_NAME = "device-run"
ENTRYPOINT = "flows/device_run.py:device_run"
AGENT_DIR_ENV = "GREENPIPE_AGENT_DIR"
# One process per job: the engine itself (it runs the pull step), not a supervisor that starts the
# engine. `python` is the host's environment with greenpipe[board] (first on the worker's PATH).
JOB_COMMAND = "python -m prefect.engine"


def deployment_name(pool: str) -> str:
    """The deployment of flows/device_run.py that serves work pool ``pool``."""
    return f"{FLOW_NAME}/{pool}"


def ensure_deployment(client: Any, pool: str) -> str:
    """Create (or update) the deployment of flows/device_run.py for ``pool``; return its full name.

    ``client`` is a synchronous Prefect client (``get_client(sync_client=True)``).
    """
    flow_id = client.create_flow_from_name(FLOW_NAME)
    client.create_deployment(
        flow_id=flow_id,
        name=pool,
        work_pool_name=pool,
        entrypoint=ENTRYPOINT,
        # Resolved on the host at run time: every worker points this at its own greenpipe checkout.
        pull_steps=[
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $" + AGENT_DIR_ENV + " }}"}}
        ],
        # No job variables: the work pool's locked template fixes command and environment (JOB_COMMAND).
        description="greenpipe device_run: measure (deploy) or soak one compiled artifact on a device host",
        tags=["greenpipe"],
        enforce_parameter_schema=False,
    )
    return deployment_name(pool)
