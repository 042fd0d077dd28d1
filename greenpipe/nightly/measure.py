"""Which stages measure, and on what: so that concurrency never disturbs a measurement.

deploy@V-D (latency, fps) and soak@V-D (fps, energy per inference) time the artifact on device D.
On a device whose host is ``local`` the measurement shares this machine's cores with every other
stage, so it runs alone; on a remote device host, measurements of the same device never overlap one
another but may overlap work here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

MEASURING = ("deploy", "soak")  # dvc.yaml stages whose figures are timings or energy


def device_of(stage: str, devices: Iterable[str]) -> str | None:
    """The device a measuring stage runs on (``soak@ptq8-local`` -> ``local``), else None."""
    base, _, item = stage.partition("@")
    if base not in MEASURING or not item:
        return None
    # Device names may contain "-": take the longest device name the item ends with.
    matches = [d for d in devices if item.endswith(f"-{d}")]
    return max(matches, key=len) if matches else None


def constraints(stages: Iterable[str], hosts: Mapping[str, str]) -> tuple[set[str], dict[str, str]]:
    """(stages that must run alone, stage -> device group) for the graph runner.

    ``hosts`` maps each device of params.yaml (``deploy.devices``) to its host ("local" = this machine).
    """
    alone, groups = set(), {}
    for s in stages:
        d = device_of(s, hosts)
        if d is None:
            continue
        if hosts[d] == "local":
            alone.add(s)
        else:
            groups[s] = f"device:{d}"
    return alone, groups
