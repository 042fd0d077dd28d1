"""benchmarks/video_int8.py at the deployed 32 px, a few calls: every kernel timed, every figure real."""

from __future__ import annotations

import math

from benchmarks import video_int8

KERNELS = [f"k{k:02d}" for k in range(11)]  # TSM MobileNetV2: 10 shifts, 11 kernels


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_every_kernel_and_the_host_loop_get_finite_positive_times(capsys):
    r = video_int8.main(["--size", "32", "--runs", "6", "--rounds", "3", "--warmup", "1",
                         "--calib-clips", "1"])
    out = capsys.readouterr().out

    assert list(r["kernels"]) == KERNELS
    for name, k in r["kernels"].items():
        assert all(_positive(k[key]) for key in ("float_ms", "int8_ms", "ratio")), (name, k)
        assert all(_positive(x) for key in ("float_range", "int8_range", "ratio_range") for x in k[key]), k
        assert k["ratio_range"][0] <= k["ratio"] <= k["ratio_range"][1]
        assert k["xnnpack"]["float"] in ("whole", "part", "none")
        assert any(line.split()[:1] == [name] for line in out.splitlines()), f"{name} missing from the table"
    for part in ("kernel_sum", "loop"):
        f = r[part]
        assert all(_positive(f[key]) for key in ("float_ms", "int8_ms", "ratio")), (part, f)
        for v in ("float", "int8"):
            assert f[f"{v}_range"][0] <= f[f"{v}_ms"] <= f[f"{v}_range"][1], (part, f)
    # a block's sum adds its kernels' block medians, so the median block lies within the sums of their ranges
    for v in ("float", "int8"):
        lo, hi = (sum(k[f"{v}_range"][i] for k in r["kernels"].values()) for i in (0, 1))
        assert lo <= r["kernel_sum"][f"{v}_ms"] <= hi
    assert out.count("goal >= 2x") == 2 and ("LiteRT" in out or "TensorFlow Lite" in out)
    assert "32x32 px" in out and "2 threads" in out
