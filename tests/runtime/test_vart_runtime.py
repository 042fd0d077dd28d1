"""VART adapter: the missing-toolchain message, and the float <-> DPU int8 conversions."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from greenpipe.errors import ToolchainMissing
from greenpipe.runtime import RUNTIMES
from greenpipe.runtime.vart import from_dpu_output, to_dpu_input

EXPECTED = (
    "runtime 'vart' needs the Vitis AI runtime Python modules `xir` and `vart`; missing here: `xir`, `vart`. "
    "They ship in the Vitis AI 3.0 runtime: on a ZCU104 / Ultra96 board in the Vitis AI board image, "
    "on a VCK5000 host in the card's XRT + VART packages, or inside the Vitis AI docker container. "
    'Check with: python -c "import vart, xir"'
)


def test_missing_toolchain_message_is_exact(monkeypatch, tmp_path):
    # None in sys.modules makes `import xir` / `import vart` fail as on a host without Vitis AI.
    monkeypatch.setitem(sys.modules, "xir", None)
    monkeypatch.setitem(sys.modules, "vart", None)
    with pytest.raises(ToolchainMissing) as err:
        RUNTIMES.get("vart")(tmp_path / "model.xmodel", 1, 1)
    assert str(err.value) == EXPECTED


def test_message_names_only_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "xir", object())  # present
    monkeypatch.setitem(sys.modules, "vart", None)
    with pytest.raises(ToolchainMissing, match=r"missing here: `vart`\. They ship"):
        RUNTIMES.get("vart")(tmp_path / "model.xmodel", 1, 1)


def test_dpu_conversions_scale_by_fix_point_and_saturate():
    x = np.array([0.0, 0.5, -0.25, 0.9921875, 1.5, -2.0], np.float32).reshape(1, 1, 2, 3)
    q = to_dpu_input(x, fix_point=7)  # scale 2**-7
    assert q.dtype == np.int8 and q.shape == (1, 2, 3, 1)  # NHWC
    assert q.ravel().tolist() == [0, 64, -32, 127, 127, -128]
    y = from_dpu_output(q, fix_point=7)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y.ravel(), [0.0, 0.5, -0.25, 0.9921875, 0.9921875, -1.0])
    nchw = np.random.default_rng(0).integers(-128, 128, (2, 3, 4, 5)).astype(np.float32) / 16
    np.testing.assert_array_equal(from_dpu_output(to_dpu_input(nchw, 4), 4), nchw)
