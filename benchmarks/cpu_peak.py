"""How close do the compiled UNet artifacts come to this CPU's measured peak? (a roofline line per row)

    python benchmarks/cpu_peak.py                                   # peaks and CPU flags only
    python benchmarks/cpu_runtimes.py --json rt.json && python benchmarks/cpu_peak.py --runtimes rt.json

The peak is measured, not taken from a datasheet: each runtime's own kernels
run one large GEMM (``MatMul``, M = N = K = ``--gemm``) and one large 3x3
convolution (``Conv``, ``--conv-channels`` in and out, ``--conv-size`` px
square, batch 1), each as a float32 graph and as an int8 QDQ graph (uint8
activations, int8 per-tensor weights: ONNX Runtime runs it as
QLinearMatMul / QLinearConv, OpenVINO as its int8 kernels), and, where
/proc/cpuinfo shows avx512_bf16 or amx_bf16, the float graph in OpenVINO at
bf16 inference precision.  Each rate is MACs per call x calls/s over the
median of ``--runs`` calls, in GMAC/s; a precision's peak is its best rate.

With ``--runtimes`` (the JSON of benchmarks/cpu_runtimes.py) each measured
row gets its roofline line: the artifact's MACs per inference (counted
from the ONNX graph at the row's input shape, greenpipe/bench/macs.py) x images/s =
achieved GMAC/s, over the host's peak at the variant's precision (fp32
artifact: fp32 peak, bf16: bf16 peak, int8 ones: int8 peak; the best probe
over the runtimes, named in the line).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.int8_speedup import times_ms  # noqa: E402
from greenpipe.bench.macs import onnx_macs  # noqa: E402
from greenpipe.runtime import load  # noqa: E402
from greenpipe.runtime.base import ARITHMETIC_FLAGS, cpu_isa, describe_host, native_bf16  # noqa: E402
from greenpipe.runtime.ort import session_options  # noqa: E402
from greenpipe.runtime.u8s8 import u8s8_saturates  # noqa: E402

OPSET = 17
PROBE_WEIGHT_MAX = 63  # int8 weight range of the probes: 2 x 255 x 63 < 2**15 (see probe_model)


def _qdq(graph_nodes: list, inits: list, name: str, scale: float, zero_point: np.ndarray) -> str:
    """Append ``name -> QuantizeLinear -> DequantizeLinear`` and return the dequantized tensor's name."""
    inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
              numpy_helper.from_array(zero_point, f"{name}_zp")]
    graph_nodes += [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_zp"], [f"{name}_q"]),
                    helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_zp"], [f"{name}_dq"])]
    return f"{name}_dq"


def probe_model(op: str, x_shape: list[int], w: np.ndarray, out_scale: float | None = None) -> onnx.ModelProto:
    """One ``MatMul`` or ``Conv`` (3x3, pad 1) over input ``x`` in [0, 1] and weight ``w``.

    With ``out_scale`` it is the int8 QDQ graph: x quantized to uint8 (scale 1/255, zero point 0),
    w to int8 (per tensor, symmetric, within +-63), the output to uint8 at ``out_scale`` (zero point
    128): the pattern ORT fuses into QLinearMatMul / QLinearConv.  Without, the float32 graph.

    The weights keep to 7 bits because x86 CPUs without VNNI multiply uint8 x int8 with VPMADDUBSW,
    which saturates a pair of products at int16 (ONNX Runtime's documented u8s8 saturation): with
    |w| <= 63 no pair can saturate, so the probe computes its op on every CPU.  The kernels, and so
    the rate, are the same for any weight values.
    """
    int8 = out_scale is not None
    nodes: list = []
    inits: list = []
    x, w_name = "x", "w"
    w_scale = float(np.abs(w).max()) / PROBE_WEIGHT_MAX
    if int8:
        x = _qdq(nodes, inits, "x", 1 / 255, np.array(0, np.uint8))
        inits.append(numpy_helper.from_array(np.round(w / w_scale).astype(np.int8), "w_int8"))
        inits += [numpy_helper.from_array(np.array(w_scale, np.float32), "w_s"),
                  numpy_helper.from_array(np.array(0, np.int8), "w_zp")]
        nodes.append(helper.make_node("DequantizeLinear", ["w_int8", "w_s", "w_zp"], ["w_dq"]))
        w_name = "w_dq"
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    y = "y_float" if int8 else "y"
    if op == "MatMul":
        nodes.append(helper.make_node("MatMul", [x, w_name], [y]))
        y_shape = [x_shape[0], w.shape[1]]
    else:
        nodes.append(helper.make_node("Conv", [x, w_name], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        y_shape = [x_shape[0], w.shape[0], *x_shape[2:]]
    if int8:
        dq = _qdq(nodes, inits, y, out_scale, np.array(128, np.uint8))
        nodes.append(helper.make_node("Identity", [dq], ["y"]))
    graph = helper.make_graph(
        nodes, f"peak_{op}_{'int8' if int8 else 'fp32'}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def probe_shapes(gemm: int, channels: int, size: int) -> dict[str, tuple[list[int], tuple[int, ...], int]]:
    """``op -> (input shape, weight shape, MACs per call)`` for the GEMM and the 3x3 convolution."""
    return {
        "MatMul": ([gemm, gemm], (gemm, gemm), gemm**3),
        "Conv": ([1, channels, size, size], (channels, channels, 3, 3), channels * channels * 9 * size * size),
    }


SATURATING = "int8-sat"  # u8 x s8 where it saturates: never a peak, its outputs are not the graph's


class _AsWritten:
    """ONNX Runtime on the int8 file as written, int8 weights and all, where u8 x s8 saturates: the rate of
    the kernels greenpipe's runners avoid there (runtime/u8s8.py), for comparison only."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": x})[0]

    def describe(self) -> dict:
        return {"label": "ONNX Runtime on the int8 weights as written (u8 x s8: saturates on this CPU, not exact)"}


def measure_peaks(work: Path, gemm: int, channels: int, size: int, threads: int, runs: int,
                  bf16: bool) -> list[dict]:
    """One row per (runtime, op, precision): GMAC/s from the median of ``runs`` calls, with min - max."""
    rng = np.random.default_rng(0)
    rows = []
    for op, (x_shape, w_shape, macs) in probe_shapes(gemm, channels, size).items():
        x = rng.random(x_shape, dtype=np.float32)
        w = (rng.standard_normal(w_shape) * 0.05).astype(np.float32)
        out_scale = None
        for precision in ("fp32", "int8"):
            path = work / f"{op}_{precision}.onnx"
            onnx.save(probe_model(op, x_shape, w, out_scale), path)
            runners = {name: load(name, path, threads, 1) for name in ("ort", "openvino")}
            out_scale = float(np.abs(runners["ort"].run(x)).max()) / 127  # the int8 graph's output range
            if precision == "int8" and u8s8_saturates():
                runners["ort_u8s8"] = _AsWritten(path, threads)  # what the re-encoding costs here
            if bf16 and precision == "fp32":
                runners["openvino_bf16"] = load("openvino_bf16", path, threads, 1)
            times = times_ms({name: (lambda r=r: r.run(x)) for name, r in runners.items()}, runs, warmup=1)
            for name, t in times.items():
                med = statistics.median(t)
                rows.append({
                    "runtime": name, "op": op,
                    "precision": ("bf16" if name.endswith("_bf16") else
                                  SATURATING if name.endswith("_u8s8") else precision),
                    "macs": macs,
                    "label": runners[name].describe()["label"], "median_ms": med, "runs": len(t),
                    "gmacs": macs / med / 1e6, "gmacs_min": macs / max(t) / 1e6, "gmacs_max": macs / min(t) / 1e6,
                })
    return rows


def peak(rows: list[dict], precision: str) -> dict | None:
    """The host's peak at ``precision``: the best-rate probe row over every runtime and op."""
    mine = [r for r in rows if r["precision"] == precision]
    return max(mine, key=lambda r: r["gmacs"]) if mine else None


def roofline(runtime_rows: list[dict], peaks: list[dict]) -> list[dict]:
    """Each cpu_runtimes.py row with its achieved GMAC/s and fraction of the host's peak at its precision."""
    lines = []
    for r in runtime_rows:
        precision = {"fp32": "fp32", "bf16": "bf16"}.get(r["variant"], "int8")
        best = peak(peaks, precision)
        achieved = r["conv_macs"] / r["batch"] * r["fps"] / 1e9
        lines.append({**{k: r[k] for k in ("variant", "batch", "runtime", "fps", "agrees")},
                      "macs_per_image": r["conv_macs"] // r["batch"], "precision": precision,
                      "achieved_gmacs": achieved, "peak_gmacs": best["gmacs"] if best else None,
                      "peak_probe": f"{best['runtime']} {best['op']} {precision}" if best else None,
                      "fraction_of_peak": achieved / best["gmacs"] if best else None})
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gemm", type=int, default=1024, help="M = N = K of the GEMM probe")
    ap.add_argument("--conv-channels", type=int, default=128, help="input = output channels of the conv probe")
    ap.add_argument("--conv-size", type=int, default=64, help="H = W of the conv probe (px)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=6, help="timed calls per probe (at least 5)")
    ap.add_argument("--runtimes", type=Path, help="JSON of benchmarks/cpu_runtimes.py: print a roofline line per row")
    ap.add_argument("--json", type=Path, help="also write peaks (and roofline lines) here")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs must be at least 5")
    bf16 = bool(native_bf16())
    with tempfile.TemporaryDirectory() as tmp:
        peaks = measure_peaks(Path(tmp), args.gemm, args.conv_channels, args.conv_size, args.threads, args.runs, bf16)

    print(f"measured on {describe_host(args.threads)}")
    print(f"CPU flags (/proc/cpuinfo): {cpu_isa() or 'none of ' + ', '.join(ARITHMETIC_FLAGS)}")
    print(f"bf16: {'native (avx512_bf16 / amx_bf16 present): OpenVINO bf16 probed' if bf16 else 'not native: not probed'}")
    print(f"probes: MatMul {args.gemm}^3 MACs; Conv 3x3 {args.conv_channels}->{args.conv_channels} ch on "
          f"{args.conv_size}x{args.conv_size}; median of {peaks[0]['runs']} calls (GMAC/s at min - max time)")
    for label in dict.fromkeys(r["label"] for r in peaks):
        print(f"  {label}")
    print()
    print(f"{'runtime':13} {'op':7} {'precision':9} {'GMAC/s':>9} {'range':>17}")
    for r in peaks:
        print(f"{r['runtime']:13} {r['op']:7} {r['precision']:9} {r['gmacs']:9.1f} "
              f"{r['gmacs_min']:8.1f} - {r['gmacs_max']:6.1f}")
    if any(r["precision"] == SATURATING for r in peaks):
        print(f"({SATURATING}: the int8 files as written, whose u8 x s8 kernels saturate on this CPU; greenpipe's "
              "runners load them re-encoded (int8 rows), so these rates are for comparison, never a peak)")
    result: dict = {"host": describe_host(args.threads), "cpu_flags": cpu_isa().split(), "peaks": peaks}
    if args.runtimes:
        data = json.loads(args.runtimes.read_text())
        lines = roofline(data["rows"], peaks)
        result["roofline"] = lines
        print(f"\nroofline ({args.runtimes}: {data['models']}; MACs counted from the ONNX graphs by greenpipe/bench/macs.py)")
        print(f"{'variant':8} {'batch':>5} {'runtime':13} {'MMAC/img':>9} {'img/s':>8} {'GMAC/s':>8} "
              f"{'peak':>8} {'of peak':>8}  probe")
        for ln in lines:
            frac = f"{ln['fraction_of_peak']:8.1%}" if ln["peak_gmacs"] else f"{'n/a':>8}"
            note = "" if ln["agrees"] else "  (excluded: disagrees)"
            if (ln["fraction_of_peak"] or 0) > 1:
                note += "  (above the probed peak: the probes and this row ran under different load)"
            print(f"{ln['variant']:8} {ln['batch']:>5} {ln['runtime']:13} {ln['macs_per_image'] / 1e6:9.1f} "
                  f"{ln['fps']:8.2f} {ln['achieved_gmacs']:8.1f} {ln['peak_gmacs'] or 0:8.1f} {frac}  "
                  f"{ln['peak_probe'] or 'no peak probed at ' + ln['precision']}{note}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
