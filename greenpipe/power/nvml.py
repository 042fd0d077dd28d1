"""NVIDIA GPU board power via NVML (package ``nvidia-ml-py``, module ``pynvml``).

``nvmlDeviceGetPowerUsage`` gives the board's power draw in milliwatts;
``nvmlDeviceGetTotalEnergyConsumption`` (Volta and later) a millijoule
counter since the driver loaded, reported here as joules since the meter
opened.  pynvml is imported when the meter opens, never at import.

    meter = NvmlMeter(index=0)
"""

from __future__ import annotations

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.power.base import METERS, Meter, MeterInfo, Sample
from greenpipe import tooling

_INSTALL = "`pip install nvidia-ml-py` into the environment greenpipe runs in"


def _load_pynvml():
    try:
        import pynvml
    except ImportError:
        raise ToolchainMissing(
            f"NVML meter: the Python package nvidia-ml-py (module pynvml) is not installed. Fix: {_INSTALL}"
        ) from None
    return pynvml


def _init(pynvml) -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        raise ToolchainMissing(
            "NVML meter: libnvidia-ml.so.1 not found -- no NVIDIA driver is installed here (or it is not "
            "on the loader path). Fix: install the NVIDIA driver on a machine with an NVIDIA GPU (in a "
            "container, run it with the NVIDIA container toolkit, `--gpus all`), or choose another meter."
        ) from None
    except pynvml.NVMLError_DriverNotLoaded:
        raise ToolchainMissing(
            "NVML meter: the NVIDIA kernel driver is not loaded (or no NVIDIA GPU is present). "
            "Fix: check `nvidia-smi`; load the driver (`sudo modprobe nvidia`) or reboot after installing it."
        ) from None
    except pynvml.NVMLError as err:
        raise GreenpipeError(
            f"NVML meter: nvmlInit failed: {err}. Fix: check that `nvidia-smi` works."
        ) from None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older pynvml returns bytes


def _nvml_probe() -> tooling.Found:
    """For ``greenpipe doctor``: the driver version when NVML initialises here, else why not."""
    try:
        pynvml = _load_pynvml()
        _init(pynvml)
    except GreenpipeError as err:
        return tooling.Found(False, str(err).split(". Fix")[0])
    try:
        return tooling.Found(True, f"driver {_text(pynvml.nvmlSystemGetDriverVersion())}")
    finally:
        pynvml.nvmlShutdown()


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "NVML (nvidia-ml-py)", "never",
    "nothing: tests/power/test_nvml.py checks the missing-library message; its gpu test skips here",
    "pip install nvidia-ml-py && pytest -m gpu tests/power/test_nvml.py", _nvml_probe),)


@METERS.register("nvml")
class NvmlMeter(Meter):
    """Board power of NVIDIA GPU ``index`` (as numbered by NVML / nvidia-smi)."""

    name = "nvml"

    def __init__(self, index: int = 0):
        self._nvml = pynvml = _load_pynvml()
        _init(pynvml)
        self._open = True
        try:
            count = pynvml.nvmlDeviceGetCount()
            if not 0 <= index < count:
                raise ToolchainMissing(
                    f"NVML meter: no NVIDIA GPU at index {index}; NVML sees {count} GPU(s). "
                    f"Fix: pass index= 0..{count - 1}" if count else
                    "NVML meter: the driver loaded but sees no NVIDIA GPU. Fix: check `nvidia-smi -L`."
                )
            self.index = index
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.gpu_name = _text(pynvml.nvmlDeviceGetName(self._handle))
            self._energy0_mj = self._energy_mj()
            if self._power_mw() is None:
                raise ToolchainMissing(
                    f"NVML meter: GPU {index} ({self.gpu_name}) does not report power draw "
                    "(nvmlDeviceGetPowerUsage is not supported on this board). Fix: use a wall meter."
                )
        except BaseException:
            self.close()
            raise

    def _power_mw(self) -> int | None:
        try:
            return self._nvml.nvmlDeviceGetPowerUsage(self._handle)
        except self._nvml.NVMLError_NotSupported:
            return None

    def _energy_mj(self) -> int | None:
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._nvml.NVMLError_NotSupported:  # before Volta
            return None

    def sample(self) -> Sample:
        mw = self._power_mw()
        mj = self._energy_mj() if self._energy0_mj is not None else None
        energy_j = (mj - self._energy0_mj) / 1e3 if mj is not None else None
        return Sample.now(mw / 1e3 if mw is not None else None, energy_j)

    def describe(self) -> MeterInfo:
        counter = "with" if self._energy0_mj is not None else "without"
        return MeterInfo(
            name=self.name,
            scope="card",
            what=f"GPU {self.index} {self.gpu_name} board power via NVML ({counter} an energy counter)",
            measured=True,
            units="nvmlDeviceGetPowerUsage mW -> W; nvmlDeviceGetTotalEnergyConsumption mJ -> J since open",
            resolution="NVML documents the power reading as averaged over 1 s on Ampere (except GA100) "
                       "and newer and instantaneous on GA100 and older; for averages over a run prefer the "
                       "energy counter (energy_j) where it exists",
        )

    def close(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            self._nvml.nvmlShutdown()
