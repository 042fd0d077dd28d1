"""x86 CPU package / DRAM energy from the Linux powercap RAPL counters.

Reads ``<root>/intel-rapl:*/energy_uj`` (microjoules, a free-running counter
that wraps at ``max_energy_range_uj``); AMD Zen CPUs appear under the same
``intel-rapl`` names.  Watts are the energy difference between consecutive
samples divided by the monotonic time between them, so a reading is the
average power since the previous ``sample()`` (or since the meter opened).

Zones are keyed by their ``name`` file: top-level zones as ``package-0``,
``psys``...; subzones as ``<parent>/<name>``, e.g. ``package-0/dram``.
``watts`` sums the selected zones; by default the packages plus DRAM, because
``core``/``uncore`` are parts of their package and ``psys`` (platform) already
contains the packages -- summing those would count energy twice.  ``rails``
always holds every zone's watts.

    meter = RaplMeter()                      # /sys/class/powercap
    meter = RaplMeter(zones=["package-0"])   # one package only
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.power.base import METERS, Meter, MeterInfo, Sample
from greenpipe import tooling

DEFAULT_ROOT = "/sys/class/powercap"


def _read_text(path: Path) -> str:
    return path.read_text()


@dataclass
class _Zone:
    key: str  # "package-0" or "package-0/dram"
    name: str  # contents of the zone's name file
    path: Path
    max_range_uj: int
    last_uj: int = 0
    total_uj: int = 0  # unwrapped energy since the meter opened


def unwrap_delta(prev_uj: int, now_uj: int, max_range_uj: int) -> int:
    """Energy in µJ between two counter readings, allowing for one wrap-around.

    The counter runs from 0 to ``max_range_uj`` and starts again at 0; a
    smaller reading than the previous one means it wrapped once.  (More than
    one wrap between samples cannot be seen: sample more often than
    ``max_range_uj / peak power``, minutes even for a server package.)
    """
    delta = now_uj - prev_uj
    if delta < 0:
        delta += max_range_uj
    return delta


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "RAPL (powercap sysfs)", "fake", "fake sysfs trees in the documented layout (tests/power/test_rapl.py)",
    "python -c \"import time; from greenpipe.power import open_meter; m = open_meter('rapl'); "
    "time.sleep(1); print(m.sample())\"",
    tooling.path(f"{DEFAULT_ROOT}/intel-rapl:*/energy_uj", "RAPL zones")),)


@METERS.register("rapl")
class RaplMeter(Meter):
    """CPU package (+ DRAM) power from RAPL energy counters.

    root:   the powercap class directory (tests point it at a temp tree).
    zones:  zone keys or bare names to sum into ``watts`` (``"dram"`` picks
            every ``*/dram``); default: every ``package-*`` plus every ``dram``.
    reader: how a sysfs file is read (``Path -> str``); lets a test inject the
            PermissionError a non-root user gets on a root-only counter.
    """

    name = "rapl"

    def __init__(self, root: str | Path = DEFAULT_ROOT, zones: Sequence[str] | None = None,
                 reader: Callable[[Path], str] = _read_text):
        self.root = Path(root)
        self._read = reader
        self._zones = self._discover()
        self._summed = self._select(zones)
        for zone in self._zones:  # first read: baseline, and the permission check
            zone.last_uj = self._read_uj(zone)
        self._last_t = time.monotonic()

    # -- discovery ---------------------------------------------------------
    def _discover(self) -> list[_Zone]:
        if not self.root.is_dir():
            raise ToolchainMissing(
                f"RAPL: {self.root} does not exist, so this kernel exposes no powercap counters. "
                "Fix: on bare-metal x86 Linux load the driver (`sudo modprobe intel_rapl_msr`); in a VM or "
                "container RAPL is usually not passed through -- use another meter (nvml, wallmeter) or "
                "the `estimate` meter, which is labelled as an estimate."
            )
        dirs = sorted(self.root.glob("intel-rapl:*"))
        # The MMIO interface mirrors the MSR package zone on some laptops: use it only when alone.
        dirs = dirs or sorted(self.root.glob("intel-rapl-mmio:*"))
        dirs = [d for d in dirs if (d / "energy_uj").exists()]
        if not dirs:
            raise ToolchainMissing(
                f"RAPL: no intel-rapl zone with an energy_uj counter under {self.root}. "
                "Fix: `sudo modprobe intel_rapl_msr` on a bare-metal x86 machine; if that fails this CPU, "
                "hypervisor or kernel does not expose RAPL -- use another meter or `estimate`."
            )
        names = {d.name: self._read(d / "name").strip() for d in dirs}
        zones = []
        for d in dirs:
            parent = d.name.rsplit(":", 1)[0]
            nested = parent.count(":") >= 1  # "intel-rapl:0:1" -> parent "intel-rapl:0"
            key = f"{names.get(parent, parent)}/{names[d.name]}" if nested else names[d.name]
            max_range = int(self._read(d / "max_energy_range_uj").strip())
            zones.append(_Zone(key=key, name=names[d.name], path=d, max_range_uj=max_range))
        return zones

    def _select(self, wanted: Sequence[str] | None) -> list[_Zone]:
        if wanted is None:
            chosen = [z for z in self._zones if z.name.startswith("package") or z.name == "dram"]
            return chosen or [z for z in self._zones if "/" not in z.key]
        if isinstance(wanted, str):
            wanted = [wanted]
        chosen = []
        for want in wanted:
            hits = [z for z in self._zones if want in (z.key, z.name)]
            if not hits:
                raise GreenpipeError(
                    f"RAPL: no zone {want!r} under {self.root}; zones here: "
                    f"{', '.join(z.key for z in self._zones)}. Fix: pass zones= from that list."
                )
            chosen += [z for z in hits if z not in chosen]
        return chosen

    def _read_uj(self, zone: _Zone) -> int:
        path = zone.path / "energy_uj"
        try:
            return int(self._read(path).strip())
        except PermissionError:
            raise GreenpipeError(
                f"RAPL: {path} exists but is readable by root only (Linux >= 5.10 restricts the RAPL "
                "counters, CVE-2020-8694). Fix: grant read access until reboot with "
                f"`sudo chmod a+r {self.root}/intel-rapl:*/energy_uj`, or for good with a udev rule, e.g. "
                "/etc/udev/rules.d/99-rapl.rules: ACTION==\"add\", SUBSYSTEM==\"powercap\", "
                "KERNEL==\"intel-rapl:*\", RUN+=\"/bin/chmod a+r /sys%p/energy_uj\". "
                "(`setcap cap_dac_read_search+ep` on the Python binary also works but lets it read every "
                "file on the machine.) Or run the measurement as root."
            ) from None

    # -- Meter -------------------------------------------------------------
    def sample(self) -> Sample:
        deltas = {}
        for zone in self._zones:
            now_uj = self._read_uj(zone)
            deltas[zone.key] = unwrap_delta(zone.last_uj, now_uj, zone.max_range_uj)
            zone.last_uj = now_uj
            zone.total_uj += deltas[zone.key]
        t = time.monotonic()
        dt, self._last_t = t - self._last_t, t
        rails = {key: d / 1e6 / dt for key, d in deltas.items()} if dt > 0 else {}
        watts = sum(rails[z.key] for z in self._summed) if rails else None
        energy_j = sum(z.total_uj for z in self._summed) / 1e6
        return Sample(t, time.time(), watts, energy_j, rails)

    def describe(self) -> MeterInfo:
        summed = " + ".join(z.key for z in self._summed)
        return MeterInfo(
            name=self.name,
            scope="package",
            what=f"CPU RAPL energy counters ({summed}) from {self.root}, as average watts between samples",
            measured=True,
            units="energy_uj (µJ) -> J; watts = ΔJ / Δt (monotonic s); "
                  "counter wrap at max_energy_range_uj undone",
            resolution="counters update about every 1 ms; each reading averages over the time since the "
                       "previous sample; RAPL is the CPU's own energy accounting for the package and DRAM "
                       "domains only, not the whole system",
        )
