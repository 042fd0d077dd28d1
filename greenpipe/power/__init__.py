"""Power meters: one module per source, one registry.

    from greenpipe.power import open_meter, available
    ok, why = available("rapl")
    with open_meter("nvml", index=0) as meter:
        print(meter.describe().what, meter.sample().watts)

Registered meters: ``nvml`` (NVIDIA GPU board power), ``rapl`` (x86
package/DRAM energy counters), ``xbutil`` (VCK5000 / Alveo card power via
XRT), ``hwmon`` (ina2xx shunt monitors on ZCU104 / Ultra96 rails),
``wallmeter`` (an external wall meter's CSV log) and ``estimate`` (CPU
utilisation x TDP share, the fallback that is *not* a measurement).
:class:`~greenpipe.power.sampler.Sampler` samples any of them in the
background.
"""

from __future__ import annotations

import inspect
from typing import Any

from greenpipe.errors import GreenpipeError
from greenpipe.power.base import METERS, SCOPES, Meter, MeterInfo, Sample
from greenpipe.power import estimate, hwmon, nvml, rapl, wallmeter, xbutil  # noqa: F401  (register meters)
from greenpipe.power.sampler import Sampler

__all__ = ["METERS", "SCOPES", "Meter", "MeterInfo", "Sample", "Sampler", "available", "open_meter"]


def open_meter(name: str, **options: Any) -> Meter:
    """Open the meter registered as ``name`` with its keyword ``options``.

    Raises GreenpipeError for an unknown meter or option, and the meter's own
    ToolchainMissing / GreenpipeError when it cannot read anything here.
    """
    cls = METERS.get(name)
    params = inspect.signature(cls).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        accepted = ", ".join(params) or "none"
        raise GreenpipeError(
            f"power meter {name!r} has no option {', '.join(map(repr, unknown))}; its options are: {accepted}"
        )
    missing = [p for p, param in params.items() if param.default is param.empty and p not in options]
    if missing:
        raise GreenpipeError(
            f"power meter {name!r} needs option {', '.join(f'{p}=' for p in missing)}; "
            f"see `help(greenpipe.power.{cls.__module__.rsplit('.', 1)[-1]})`"
        )
    return cls(**options)


def available(name: str, **options: Any) -> tuple[bool, str]:
    """Whether meter ``name`` works here: ``(True, what it measures)`` or ``(False, why not and the fix)``.

    Opens the meter (which reads the source once) and closes it again.
    """
    try:
        meter = open_meter(name, **options)
    except GreenpipeError as err:
        return False, str(err)
    try:
        return True, meter.describe().what
    finally:
        meter.close()
