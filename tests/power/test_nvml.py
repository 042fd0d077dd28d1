import importlib.util
import sys
import time

import pytest

from greenpipe.errors import ToolchainMissing
from greenpipe.power import available, open_meter


def _nvidia_driver_here() -> bool:
    if importlib.util.find_spec("pynvml") is None:
        return False
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_nvidia_driver_here(), reason="an NVIDIA driver is present: the meter opens")
def test_missing_driver_or_library_names_what_and_the_fix():
    with pytest.raises(ToolchainMissing) as err:
        open_meter("nvml")
    message = str(err.value)
    if importlib.util.find_spec("pynvml") is None:
        assert "nvidia-ml-py" in message and "pip install nvidia-ml-py" in message
    else:
        assert "libnvidia-ml.so.1 not found" in message and "install the NVIDIA driver" in message
    ok, why = available("nvml")
    assert not ok and why == message


def test_missing_python_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # what `import pynvml` sees where it is not installed
    with pytest.raises(ToolchainMissing, match=r"nvidia-ml-py \(module pynvml\) is not installed.*pip inst"):
        open_meter("nvml")


@pytest.mark.gpu
@pytest.mark.skipif(not _nvidia_driver_here(), reason="needs an NVIDIA GPU and driver")
def test_real_gpu_board_power():
    with open_meter("nvml", index=0) as meter:
        first = meter.sample()
        time.sleep(0.2)
        second = meter.sample()
        info = meter.describe()
    assert first.watts > 0 and second.watts > 0
    assert second.t > first.t
    if second.energy_j is not None:
        assert second.energy_j >= first.energy_j >= 0
    assert info.scope == "card" and info.measured and "via NVML" in info.what
