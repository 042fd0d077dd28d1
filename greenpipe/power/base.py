"""The meter interface: a meter samples watts.

Every power source greenpipe knows (NVML, RAPL, xbutil, ina2xx hwmon, a wall
meter's log, the CPU-utilisation estimate) is one module holding one
:class:`Meter` subclass registered in :data:`METERS`; ``greenpipe.power``
imports them all and offers :func:`greenpipe.power.open_meter`.

Units everywhere: seconds, watts, joules.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, get_args

from greenpipe.registry import Registry

Scope = Literal["card", "package", "board-rail", "system", "estimate"]
SCOPES: tuple[str, ...] = get_args(Scope)


@dataclass(frozen=True)
class Sample:
    """One reading.

    t:        ``time.monotonic()`` seconds when the reading was taken (for
              durations and integration; immune to clock steps).
    t_wall:   ``time.time()`` seconds since the epoch, the same instant (to
              align with logs from other machines, e.g. a wall meter).
    watts:    power in W over the meter's scope; ``None`` when the source
              reports N/A or could not be read this time.
    energy_j: joules accumulated since the meter was opened, for meters that
              keep an energy counter (RAPL, NVML on Volta+) or integrate one
              (the estimate); ``None`` otherwise.
    rails:    per-rail (or per-zone) watts where the source has them.
    """

    t: float
    t_wall: float
    watts: float | None
    energy_j: float | None = None
    rails: dict[str, float] = field(default_factory=dict)

    @classmethod
    def now(cls, watts: float | None, energy_j: float | None = None,
            rails: dict[str, float] | None = None) -> "Sample":
        """A sample stamped with both clocks read now."""
        return cls(time.monotonic(), time.time(), watts, energy_j, dict(rails or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the soak stage checkpoints)."""
        return asdict(self)


@dataclass(frozen=True)
class MeterInfo:
    """What a meter measures, said precisely enough to print in a report.

    name:       the registry name (``"rapl"``).
    scope:      ``card`` (a whole accelerator card), ``package`` (CPU
                package/DRAM counters), ``board-rail`` (shunt monitors on
                board rails), ``system`` (the wall socket), ``estimate``.
    what:       one sentence: which device, which quantity, read how.
    measured:   False only for an estimate; a report must then carry ``what``.
    units:      notes on units and conversions (``"mW from NVML -> W"``).
    resolution: how fresh and fine a reading is (update rate, averaging).
    """

    name: str
    scope: Scope
    what: str
    measured: bool
    units: str
    resolution: str

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope {self.scope!r} is not one of {', '.join(SCOPES)}")
        if self.measured == (self.scope == "estimate"):
            raise ValueError("measured must be False exactly when scope is 'estimate'")


# Meters whose readings are a log written elsewhere and read back afterwards: their figures are
# labelled "imported", not "measured" (nothing here read the meter, and the log's clock is another's).
IMPORTED_METERS = frozenset({"wallmeter"})


def provenance(meter: str, measured: bool | None) -> str:
    """How meter ``meter``'s figures were obtained, as every report prints it:
    ``measured`` (read live here), ``imported`` (a meter's log read back), ``ESTIMATE`` or ``unknown``."""
    if measured is None:
        return "unknown"
    if not measured:
        return "ESTIMATE"
    return "imported" if meter in IMPORTED_METERS else "measured"


class Meter(ABC):
    """Samples watts from one source.

    Constructors take the meter's options as keyword arguments and check that
    the source works here, raising :class:`~greenpipe.errors.ToolchainMissing`
    or :class:`~greenpipe.errors.GreenpipeError` with the fix when it does not.
    """

    name: ClassVar[str]

    @abstractmethod
    def sample(self) -> Sample:
        """Read the source now."""

    @abstractmethod
    def describe(self) -> MeterInfo:
        """What this meter measures (for reports)."""

    def close(self) -> None:
        """Release the source (NVML handle, temp files). Idempotent."""

    def __enter__(self) -> "Meter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


METERS: Registry[type[Meter]] = Registry("power meter")
