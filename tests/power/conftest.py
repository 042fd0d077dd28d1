"""Builders of real-format inputs for the meters: sysfs/procfs trees and logs in temp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

RAPL_MAX_UJ = 262143328850  # max_energy_range_uj of a real package-0 zone


class RaplTree:
    """/sys/class/powercap as the kernel lays it out: class links into a nested device tree.

    package-0 (intel-rapl:0) with subzones core (intel-rapl:0:0) and dram (intel-rapl:0:1).
    """

    zones = {"intel-rapl:0": "package-0", "intel-rapl:0:0": "core", "intel-rapl:0:1": "dram"}
    max_uj = RAPL_MAX_UJ

    def __init__(self, base: Path):
        self.root = base / "class" / "powercap"
        device = base / "devices" / "virtual" / "powercap" / "intel-rapl"
        self.root.mkdir(parents=True)
        device.mkdir(parents=True)
        (device / "enabled").write_text("1\n")  # the control type: no counter of its own
        (self.root / "intel-rapl").symlink_to(device)
        for zone, name in self.zones.items():
            parent = device if zone.count(":") == 1 else device / "intel-rapl:0"
            path = parent / zone
            path.mkdir()
            (path / "name").write_text(name + "\n")
            (path / "max_energy_range_uj").write_text(f"{RAPL_MAX_UJ}\n")
            (path / "energy_uj").write_text("0\n")
            (self.root / zone).symlink_to(path)

    def path(self, name: str) -> Path:
        zone = next(z for z, n in self.zones.items() if n == name)
        return self.root / zone / "energy_uj"

    def set(self, **energy_uj: int) -> None:
        """Set counters by zone name: set(package_0=..., dram=...)."""
        for name, value in energy_uj.items():
            self.path(name.replace("_", "-")).write_text(f"{value}\n")


@pytest.fixture
def rapl_tree(tmp_path: Path) -> RaplTree:
    return RaplTree(tmp_path)


class HwmonTree:
    """/sys/class/hwmon with three ina226 rails and one unrelated chip.

    hwmon0: ina226 with a hwmon ``label`` file "ina226-u79", power1_input 2.5 W
    hwmon1: ina226 labelled only in the device tree (of_node/label, NUL-terminated) "ina226-u81", 1.25 W
    hwmon2: ina226 with no label and only in1_input/curr1_input: 12000 mV x 500 mA = 6 W, i2c device 3-0040
    hwmon3: coretemp (not a shunt monitor)
    """

    def __init__(self, base: Path):
        self.root = base / "class" / "hwmon"
        self.root.mkdir(parents=True)
        i2c = base / "devices" / "i2c-3"
        for index, device in enumerate(["1-0040", "1-0041", "3-0040", "coretemp.0"]):
            dev = i2c / device
            (dev / "of_node").mkdir(parents=True)
            hw = dev / "hwmon" / f"hwmon{index}"
            hw.mkdir(parents=True)
            (hw / "device").symlink_to(dev)
            (self.root / f"hwmon{index}").symlink_to(hw)
        self.write("hwmon0", name="ina226", label="ina226-u79", power1_input=2_500_000, update_interval=35)
        self.write("hwmon1", name="ina226", power1_input=1_250_000, in1_input=850, curr1_input=1470)
        (self.root / "hwmon1" / "device" / "of_node" / "label").write_bytes(b"ina226-u81\0")
        self.write("hwmon2", name="ina226", in0_input=2, in1_input=12000, curr1_input=500)
        self.write("hwmon3", name="coretemp", temp1_input=45000)

    def write(self, hwmon: str, **files: object) -> None:
        for file, value in files.items():
            (self.root / hwmon / file).write_text(f"{value}\n")


@pytest.fixture
def hwmon_tree(tmp_path: Path) -> HwmonTree:
    return HwmonTree(tmp_path)


class ProcTree:
    """A procfs with /proc/stat (aggregate line + per-CPU lines) and one process's stat."""

    PID = 4242

    def __init__(self, base: Path):
        self.root = base / "proc"
        (self.root / str(self.PID)).mkdir(parents=True)
        self.cpu = {"user": 1000, "nice": 10, "system": 500, "idle": 50000, "iowait": 100,
                    "irq": 0, "softirq": 20, "steal": 0}
        self.proc_ticks = (300, 100)  # utime, stime
        self.flush()

    def add(self, **ticks: int) -> None:
        """Advance the machine's counters; ``proc_user=`` advances the process's utime too."""
        proc_user = ticks.pop("proc_user", 0)
        for key, value in ticks.items():
            self.cpu[key] += value
        self.proc_ticks = (self.proc_ticks[0] + proc_user, self.proc_ticks[1])
        self.flush()

    def flush(self) -> None:
        c = self.cpu
        order = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
        fields = " ".join(str(c[k]) for k in order)
        (self.root / "stat").write_text(
            f"cpu  {fields} 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 12345 0 0\nctxt 999\nbtime 1700000000\n"
        )
        utime, stime = self.proc_ticks
        # proc(5): pid (comm) state ppid ... utime(14) stime(15) ...; comm with spaces and a ')'
        rest = ["S", "1", "1", "1", "0", "-1", "4194304", "100", "0", "0", "0", str(utime), str(stime),
                "0", "0", "20", "0", "3", "0", "12345"]
        (self.root / str(self.PID) / "stat").write_text(f"{self.PID} (py (worker) x) {' '.join(rest)}\n")


@pytest.fixture
def proc_tree(tmp_path: Path) -> ProcTree:
    return ProcTree(tmp_path)


T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z

WALL_LOG = """\
# WT310 via PTDaemon, exported; one reading a second, a dropout, then a reading typed in by hand
timestamp,watts
1700000000,100
2023-11-14T22:13:21+00:00,100
1700000002.0,200
1700000003,N/A
2023-11-14T23:13:30+01:00,300
1700000011,300
"""


@pytest.fixture
def wall_log(tmp_path: Path) -> Path:
    """T0: 100 W, T0+1: 100, T0+2: 200, T0+3: N/A, (7 s without readings), T0+10: 300, T0+11: 300."""
    path = tmp_path / "wall.csv"
    path.write_text(WALL_LOG)
    return path
