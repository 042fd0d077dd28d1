"""AMD/Xilinx VCK5000 (and Alveo) card power through XRT.

Each sample runs (XRT 2.x)::

    xbutil examine -d <bdf> -r electrical --format JSON -o <tmpfile>

and parses the report with :func:`parse_electrical`.  In that report every
value is a string, and a sensor the card does not have reads ``"N/A"``,
``"NA"`` or ``"0.000"`` with ``is_present: "false"``::

    {"devices": [{"device_id": "0000:65:00.1",
                  "electrical": {"power_consumption_watts": "41.07",
                                 "power_consumption_max_watts": "225",
                                 "power_rails": [{"id": "12v_pex", "description": "12 Volts PCI Express",
                                                  "voltage": {"volts": "12.133", "is_present": "true"},
                                                  "current": {"amps": "1.912", "is_present": "true"}}]}}]}

``watts`` is the card's own total (``power_consumption_watts``); the rails
are never summed into it, because the list mixes input rails (12 V PCIe and
AUX) with rails fed from them (VCCINT...), so a sum would count twice.

If XRT's Python binding ``pyxrt`` is importable, ``backend="auto"`` uses it
instead: ``pyxrt.device(bdf).get_info(pyxrt.xrt_info_device.electrical)``
returns the same ``electrical`` object as JSON without starting a process.

    meter = XbutilMeter(bdf="0000:65:00.1")
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.power.base import METERS, Meter, MeterInfo, Sample
from greenpipe import tooling

_XRT_HINT = (
    "install XRT for the card (the xrt package from the card's getting-started page, e.g. the VCK5000 "
    "deployment platform) and run `source /opt/xilinx/xrt/setup.sh` so that xbutil is on PATH"
)


def _number(value: Any) -> float | None:
    """A report value as a float, or None for "N/A", "NA", "" and anything else that is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_electrical(doc: dict) -> tuple[float | None, dict[str, float]]:
    """Card watts and per-rail watts from an XRT electrical report.

    ``doc`` is the whole ``xbutil examine -r electrical --format JSON`` file
    (first device), ``{"electrical": {...}}``, or the bare electrical object
    pyxrt returns.  Returns ``(watts or None when N/A, {rail id: volts x amps})``,
    keeping only rails whose voltage and current are both present numbers.
    """
    if "devices" in doc:
        if not doc["devices"]:
            raise GreenpipeError(
                "xbutil report lists no device. Fix: check that `xbutil examine` shows the card."
            )
        doc = doc["devices"][0]
    electrical = doc.get("electrical", doc)
    watts = _number(electrical.get("power_consumption_watts"))
    rails: dict[str, float] = {}
    for rail in electrical.get("power_rails", []):
        voltage, current = rail.get("voltage", {}), rail.get("current", {})
        if "false" in (voltage.get("is_present"), current.get("is_present")):
            continue  # the card has no such sensor; its "0.000" is not a reading
        volts, amps = _number(voltage.get("volts")), _number(current.get("amps"))
        if volts is not None and amps is not None:
            rails[rail.get("id") or rail.get("description", f"rail{len(rails)}")] = volts * amps
    return watts, rails


def read_report(path: str | Path) -> tuple[float | None, dict[str, float]]:
    """:func:`parse_electrical` of a JSON report file written by ``xbutil ... -o path``."""
    try:
        return parse_electrical(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise GreenpipeError(f"xbutil report {path} could not be read as JSON: {err}") from None


def build_command(xbutil: str, bdf: str | None, out: str | Path) -> list[str]:
    """The xbutil argv that writes the electrical report of card ``bdf`` to ``out``."""
    device = ["-d", bdf] if bdf else []  # without -d, xbutil picks the only card
    return [xbutil, "examine", *device, "-r", "electrical", "--format", "JSON", "-o", str(out)]


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "XRT xbutil / pyxrt", "fake",
    "hand-written reports in xbutil's documented JSON and a failing command (tests/power/test_xbutil.py)",
    "pytest -m board tests/power/test_xbutil.py",
    tooling.any_of(tooling.command(["xbutil", "--version"]), tooling.module("pyxrt"))),)


@METERS.register("xbutil")
class XbutilMeter(Meter):
    """Whole-card power of an XRT-managed card.

    bdf:     the card's PCIe address as ``xbutil examine`` lists it (user function,
             e.g. ``0000:65:00.1``); None when the host has one card.
    command: the xbutil executable (name on PATH or a path).
    backend: ``"auto"`` (pyxrt when importable, else xbutil), ``"xbutil"`` or ``"pyxrt"``.
    timeout_s: how long one xbutil call may take.
    """

    name = "xbutil"

    def __init__(self, bdf: str | None = None, command: str = "xbutil", backend: str = "auto",
                 timeout_s: float = 30.0):
        if backend not in ("auto", "xbutil", "pyxrt"):
            raise GreenpipeError(f"xbutil meter: backend {backend!r} is not one of auto, xbutil, pyxrt")
        self.bdf, self.timeout_s = bdf, timeout_s
        self._device = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        if backend in ("auto", "pyxrt"):
            try:
                import pyxrt
            except ImportError:
                if backend == "pyxrt":
                    raise ToolchainMissing(
                        f"xbutil meter: XRT's Python binding pyxrt is not importable. Fix: {_XRT_HINT}"
                    ) from None
            else:
                self._pyxrt = pyxrt
                try:
                    self._device = pyxrt.device(bdf) if bdf else pyxrt.device(0)
                except Exception as err:  # pybind11 surfaces XRT's C++ errors as RuntimeError
                    raise GreenpipeError(
                        f"xbutil meter: pyxrt could not open card {bdf or 0}: {err}. Fix: run `xbutil "
                        "examine` to list the cards and pass bdf= with the user function's address."
                    ) from None
        if self._device is None:
            found = shutil.which(command)
            if found is None:
                raise ToolchainMissing(
                    f"xbutil meter: {command!r} not found on PATH, so XRT is not set up here. "
                    f"Fix: {_XRT_HINT}"
                )
            self._xbutil = found
            self._tmp = tempfile.TemporaryDirectory(prefix="greenpipe-xbutil-")
            self._names = itertools.count()
        try:
            self.sample()  # the card answers, or the user hears why not now
        except BaseException:
            self.close()
            raise

    def _read(self) -> tuple[float | None, dict[str, float]]:
        if self._device is not None:
            report = self._device.get_info(self._pyxrt.xrt_info_device.electrical)
            return parse_electrical(json.loads(report or "{}"))  # "" / {} when no xclbin is loaded
        assert self._tmp is not None
        out = Path(self._tmp.name) / f"electrical-{next(self._names)}.json"  # xbutil refuses to overwrite
        argv = build_command(self._xbutil, self.bdf, out)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise GreenpipeError(
                f"xbutil meter: `{' '.join(argv)}` took longer than {self.timeout_s} s. "
                "Fix: check the card with `xbutil examine`; a card being reset or programmed answers late."
            ) from None
        if done.returncode != 0 or not out.exists():
            said = (done.stderr or done.stdout).strip()[-500:] or "nothing"
            raise GreenpipeError(
                f"xbutil meter: `{' '.join(argv)}` failed (exit {done.returncode}) and said: {said}. "
                "Fix: run `xbutil examine` to list the cards and pass bdf= with the user function's address."
            )
        try:
            return read_report(out)
        finally:
            out.unlink(missing_ok=True)

    def sample(self) -> Sample:
        t0, w0 = time.monotonic(), time.time()
        watts, rails = self._read()
        # An xbutil call takes about a second: stamp the reading at the middle of the call.
        t1, w1 = time.monotonic(), time.time()
        return Sample((t0 + t1) / 2, (w0 + w1) / 2, watts, None, rails)

    def describe(self) -> MeterInfo:
        via = "pyxrt get_info(electrical)" if self._device is not None else "`xbutil examine -r electrical`"
        return MeterInfo(
            name=self.name,
            scope="card",
            what=f"XRT card {self.bdf or '(the only card)'}: whole-card power "
                 f"(power_consumption_watts) via {via}",
            measured=True,
            units="report strings in V, A, W; rails are V x A per rail; N/A -> None",
            resolution="sensor refresh is up to the card's management firmware; each xbutil call starts "
                       "a process and takes on the order of a second (pyxrt does not), so sample xbutil "
                       "at 1 Hz or slower; the reading is stamped at the middle of the call",
        )

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
