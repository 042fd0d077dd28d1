"""Board rail power from ina2xx shunt monitors in hwmon sysfs (ZCU104, Ultra96, ZCU10x).

Each ``<root>/hwmonN`` whose ``name`` starts with ``ina`` (ina219, ina226,
ina230..., or ``ina226_u76`` when the Xilinx kernel bridges the IIO driver
through iio-hwmon) is one rail.  Its power is ``power1_input`` (µW), else bus
voltage ``in1_input`` (mV) x ``curr1_input`` (mA) as the native ina2xx
driver numbers them.  ``watts`` is the sum of the selected rails.

A rail is named by, in order: the hwmon ``label`` file (from the device-tree
``label`` property, e.g. ``ina226-u76`` on Xilinx boards), the device-tree
``device/of_node/label``, the chip name when it is unique, else
``<name>@<i2c device>`` (``ina226@3-0040``).  Selection also accepts the
chip name or the ``hwmonN`` directory.

    meter = HwmonMeter(rails=["ina226-u79", "ina226-u81"])

Ultra96-V2 powers its rails from irps5401 PMBus regulators, multi-channel
hwmon devices this meter does not read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.power.base import METERS, Meter, MeterInfo, Sample
from greenpipe import tooling

DEFAULT_ROOT = "/sys/class/hwmon"


@dataclass(frozen=True)
class Rail:
    label: str
    chip: str  # the hwmon name file, e.g. "ina226"
    path: Path  # the hwmonN directory
    has_power: bool  # power1_input exists; else in1_input x curr1_input

    def read_watts(self) -> float:
        """This rail's power now, in W (OSError when the I2C read fails)."""
        if self.has_power:
            return int((self.path / "power1_input").read_text()) / 1e6  # µW
        millivolts = int((self.path / "in1_input").read_text())
        milliamps = int((self.path / "curr1_input").read_text())
        return millivolts * milliamps / 1e6


def _text(path: Path) -> str | None:
    try:
        return path.read_bytes().rstrip(b"\0\n").decode().strip() or None  # DT strings end in NUL
    except OSError:
        return None


def _index(path: Path) -> int:
    digits = re.sub(r"\D", "", path.name)
    return int(digits) if digits else -1


def discover(root: str | Path = DEFAULT_ROOT, chip_prefixes: Sequence[str] = ("ina",)) -> list[Rail]:
    """Every readable shunt-monitor rail under ``root``, in hwmonN order."""
    root = Path(root)
    found: list[tuple[Path, str, bool]] = []
    for path in sorted(root.glob("hwmon*"), key=_index):
        chip = _text(path / "name") or ""
        if not chip.startswith(tuple(chip_prefixes)):
            continue
        if (path / "power1_input").exists():
            found.append((path, chip, True))
        elif (path / "in1_input").exists() and (path / "curr1_input").exists():
            found.append((path, chip, False))
    unique = {chip for chip, n in Counter(chip for _, chip, _ in found).items() if n == 1}
    rails = []
    for path, chip, has_power in found:
        device = path / "device"
        label = _text(path / "label") or _text(device / "of_node" / "label")
        if label is None:
            where = device.resolve().name if device.exists() else path.name  # i2c address, e.g. 3-0040
            label = chip if chip in unique else f"{chip}@{where}"
        rails.append(Rail(label, chip, path, has_power))
    return rails


def _ina_probe(root: Path) -> tooling.Found:
    """For ``greenpipe doctor``: the ina2xx rails under ``root``, or that there are none."""
    rails = discover(root, ("ina",)) if root.is_dir() else []
    if not rails:
        return tooling.Found(False, f"no ina2xx shunt monitor under {root}")
    return tooling.Found(True, f"rails: {', '.join(r.label for r in rails)}")


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "ina2xx hwmon (board rails)", "fake", "fake sysfs trees in the documented layout (tests/power/test_hwmon.py)",
    "python -c \"from greenpipe.power import open_meter; print(open_meter('hwmon').sample())\"",
    lambda: _ina_probe(Path(DEFAULT_ROOT))),)


@METERS.register("hwmon")
class HwmonMeter(Meter):
    """Sum of selected ina2xx board rails.

    root:  the hwmon class directory (tests point it at a temp tree).
    rails: labels (or chip names / hwmonN) of the rails to sum; default: all.
    chip_prefixes: which hwmon ``name`` values count as shunt monitors.
    """

    name = "hwmon"

    def __init__(self, root: str | Path = DEFAULT_ROOT, rails: Sequence[str] | None = None,
                 chip_prefixes: Sequence[str] = ("ina",)):
        self.root = Path(root)
        every = discover(self.root, chip_prefixes)
        if not every:
            raise ToolchainMissing(
                f"hwmon meter: no ina2xx shunt monitor under {self.root} (no hwmon*/name starting with "
                f"{' or '.join(chip_prefixes)} that has power1_input or in1_input+curr1_input). Fix: on the "
                "board, load the driver (`sudo modprobe ina2xx`, or ina2xx_adc + iio_hwmon on Xilinx "
                "kernels) and check that the device tree declares the ina226 nodes; off the board use "
                "another meter."
            )
        if rails is None:
            self.rails = every
        else:
            wanted = [rails] if isinstance(rails, str) else list(rails)
            self.rails = []
            for want in wanted:
                hits = [r for r in every if want in (r.label, r.chip, r.path.name)]
                if not hits:
                    raise GreenpipeError(
                        f"hwmon meter: no rail {want!r} under {self.root}; available rails: "
                        f"{', '.join(r.label for r in every)}. Fix: pass rails= from that list."
                    )
                self.rails += [r for r in hits if r not in self.rails]
        for rail in self.rails:  # every selected rail reads, or the user hears which does not, now
            try:
                rail.read_watts()
            except (OSError, ValueError) as err:
                raise GreenpipeError(
                    f"hwmon meter: rail {rail.label} ({rail.path}) cannot be read: {err}. Fix: check the "
                    "file permissions and the I2C bus (dmesg), or leave the rail out with rails=."
                ) from None

    def sample(self) -> Sample:
        rails: dict[str, float] = {}
        for rail in self.rails:
            try:
                rails[rail.label] = rail.read_watts()
            except (OSError, ValueError):
                pass  # a failed I2C read (EIO) this time: the sum is unknown, not smaller
        watts = sum(rails.values()) if len(rails) == len(self.rails) else None
        return Sample.now(watts, None, rails)

    def describe(self) -> MeterInfo:
        labels = ", ".join(r.label for r in self.rails)
        intervals = {_text(r.path / "update_interval") for r in self.rails} - {None}
        return MeterInfo(
            name=self.name,
            scope="board-rail",
            what=f"sum of board rails {labels} from ina2xx shunt monitors in {self.root} "
                 "(the rails' loads only, not the whole board at the wall)",
            measured=True,
            units="power1_input µW -> W, or in1_input mV x curr1_input mA -> W",
            resolution=f"each reading is the chip's latest averaged conversion (update_interval "
                       f"{'/'.join(sorted(intervals)) or 'unknown'} ms); rails are read one after another",
        )
