"""Quantization views of the report: bits / deployability labels and per-layer sensitivity.

Sensitivity here is the output error of every conv of a quantized variant
against the same conv of the fp32 model, on a few val crops, both run from
the quantize stage's ONNX exports with ONNX Runtime (``model.onnx`` of fp32,
``model.qcdq.onnx`` of the variant: the exact fixed-point model, or
``model.qdq.onnx``: inc's PT2E graph).  Error is
reported as SQNR in dB, ``10 log10(sum f^2 / sum (q - f)^2)`` (higher is
better); it accumulates along the network, so the layer where it *falls*
most is where quantization hurts::

    md = sensitivity_section(rows, Path("artifacts/quant"), Path("artifacts/prepared"),
                             Path("reports/summary/sensitivity.png"))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from greenpipe.io import read_json

CROPS, CROP_SIDE = 4, 128  # px: cheap, and a multiple of every UNet's 2**depth


def bits_label(bits: dict[str, int] | None) -> str | None:
    """{'weights': 8, 'activations': 8, 'bias': 8} -> 'w8a8'."""
    if not bits:
        return None
    return f"w{bits.get('weights', '?')}a{bits.get('activations', '?')}"


def val_crops(data: Path, count: int = CROPS, side: int = CROP_SIDE) -> list[np.ndarray]:
    """Centre crops of the first ``count`` val noisy images as (1, 3, side, side) float32."""
    from greenpipe.data.prepared import load_split

    crops = []
    for pair in load_split(data, "val")[:count]:
        noisy = pair.load()[1]
        h, w = noisy.shape[:2]
        s = min(side, h, w) // 8 * 8
        top, left = (h - s) // 2, (w - s) // 2
        crops.append(np.ascontiguousarray(noisy[top : top + s, left : left + s].transpose(2, 0, 1)[None],
                                          dtype=np.float32))
    return crops


def _conv_outputs(path: Path, inputs: Sequence[np.ndarray]) -> tuple[list[str], list[list[np.ndarray]]]:
    """Run ``path`` with every Conv output exposed; return (conv names, outputs per input)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(path)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    existing = {o.name for o in model.graph.output}
    for node in convs:
        if node.output[0] not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    # No graph rewrites: the float Conv outputs of the QCDQ model must stay visible.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [n.output[0] for n in convs]
    input_name = session.get_inputs()[0].name
    return [n.name for n in convs], [session.run(names, {input_name: x}) for x in inputs]


def layer_sqnr(float_onnx: Path, quant_onnx: Path, inputs: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """SQNR (dB) of every conv output of ``quant_onnx`` vs ``float_onnx``, matched in graph order."""
    names_f, outs_f = _conv_outputs(float_onnx, inputs)
    names_q, outs_q = _conv_outputs(quant_onnx, inputs)
    if len(names_f) != len(names_q):
        raise ValueError(f"{quant_onnx}: {len(names_q)} convs vs {len(names_f)} in {float_onnx}; cannot match layers")
    for nf, nq in zip(names_f, names_q):
        # The TorchScript exporter nests float names one level deeper than Brevitas' traced graph
        # ('/inc/inc.0/Conv' vs '/inc.0/Conv'); the module itself must be the same.
        if nf.strip("/").split("/")[-2:] != nq.strip("/").split("/")[-2:]:
            raise ValueError(f"{quant_onnx}: conv {nq!r} does not match {nf!r} of {float_onnx} (graph order differs)")
    rows = []
    for i, name in enumerate(names_f):
        signal = sum(float(np.sum(o[i].astype(np.float64) ** 2)) for o in outs_f)
        noise = sum(float(np.sum((q[i].astype(np.float64) - f[i]) ** 2)) for f, q in zip(outs_f, outs_q))
        sqnr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
        rows.append({"index": i, "layer": name.strip("/").rsplit("/", 1)[0], "sqnr_db": sqnr})
    return rows


def _artifact(quant_root: Path, variant: str) -> Path | None:
    report = quant_root / variant / "quant_report.json"
    if not report.exists():
        return None
    path = quant_root / variant / read_json(report)["artifact"]
    return path if path.exists() else None


def sensitivity(rows: Sequence[Any], quant_root: Path, data: Path) -> dict[str, list[dict]] | None:
    """Per-layer SQNR of the best and the worst quantized variant (by the deployed primary metric), or None."""
    float_onnx = _artifact(quant_root, "fp32")
    scored = [r for r in rows if r.variant != "fp32" and getattr(r, "passes", 1) == 1 and r.drop is not None
              and (p := _artifact(quant_root, r.variant)) is not None
              and p.name.endswith((".qcdq.onnx", ".qdq.onnx"))]
    if float_onnx is None or not scored:
        return None
    ranked = sorted({r.variant: -r.drop for r in scored}.items(), key=lambda kv: kv[1])  # worst first
    picks = [ranked[-1][0]] + ([ranked[0][0]] if len(ranked) > 1 else [])
    crops = val_crops(data)
    return {v: layer_sqnr(float_onnx, _artifact(quant_root, v), crops) for v in picks}


def sensitivity_plot(result: dict[str, list[dict]], path: Path) -> None:
    """Grouped bars: SQNR per conv (graph order), one colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(result)
    n = len(next(iter(result.values())))
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.45 * n), 4.2), dpi=120)
    for k, v in enumerate(variants):
        vals = [min(r["sqnr_db"], 80.0) for r in result[v]]
        ax.bar(np.arange(n) + k * width, vals, width, label=v)
    ax.set_xticks(np.arange(n) + 0.4 - width / 2)
    ax.set_xticklabels([r["layer"] for r in next(iter(result.values()))], rotation=70, fontsize=7, ha="right")
    ax.set_ylabel("conv output SQNR vs fp32 (dB, higher is better)")
    ax.set_title(f"Per-layer quantization error on {CROPS} val crops of {CROP_SIDE} px")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def sensitivity_markdown(result: dict[str, list[dict]]) -> str:
    variants = list(result)
    lines = ["## Per-layer quantization error (best and worst variant)", "",
             f"Conv output SQNR vs fp32 in dB (higher is better) on {CROPS} val crops of {CROP_SIDE} px, "
             "both models run from their ONNX exports with ONNX Runtime; error accumulates along the "
             "graph, so the largest *drop* from one layer to the next marks the most sensitive layer. "
             "Plot: sensitivity.png.", "",
             "| # | layer | " + " | ".join(f"{v} dB" for v in variants) + " |",
             "|---:|---|" + "---:|" * len(variants)]
    for i, row in enumerate(next(iter(result.values()))):
        vals = " | ".join(f"{result[v][i]['sqnr_db']:.1f}" for v in variants)
        lines.append(f"| {i} | {row['layer']} | {vals} |")
    for v in variants:
        drops = [(result[v][i - 1]["sqnr_db"] - result[v][i]["sqnr_db"], result[v][i]["layer"])
                 for i in range(1, len(result[v]))]
        worst = min(result[v], key=lambda r: r["sqnr_db"])
        if drops:
            drop, layer = max(drops)
            lines.append("")
            lines.append(f"- {v}: lowest SQNR {worst['sqnr_db']:.1f} dB at `{worst['layer']}`; "
                         f"largest drop {drop:.1f} dB entering `{layer}`")
    return "\n".join(lines) + "\n"
