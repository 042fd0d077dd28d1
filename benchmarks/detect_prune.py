"""The detect recipe's pruning goals, side by side, from one run: VGG SSD unpruned vs pruned, fp32 vs int8.

    python benchmarks/detect_prune.py                       # DVC outputs of the detect stages
    python benchmarks/detect_prune.py --repeats 7 --runs 60 --out benchmarks/results/detect_prune.txt

Speed is measured here, now: every compiled artifact (artifacts/detect/compile/<chain>/<variant>/cpu/
model.onnx) runs in ONNX Runtime on this CPU at batch 1 on one seeded input of the model's size;
each repeat times ``--runs`` calls of every artifact in alternating blocks (benchmarks/int8_speedup.py
``times_ms``), a repeat's fps is 1000 / its median ms, and the figure is the median over ``--repeats``
repeats with their min-max. The network only: the shared NMS post-process is the same numpy code
for every artifact. MACs and params come from the prune stage's metrics (metrics/prune/vgg.json,
counted over every Conv2d of the float models); mAP from the eval stage's JSONs
(metrics/detect/<chain>/<variant>.json: pycocotools on the val tiles, compiled artifacts on ORT).
The host's load average is printed: on a shared machine the fps figures are loaded-host figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_speedup import times_ms  # noqa: E402

from greenpipe.io import read_json  # noqa: E402
from greenpipe.runtime.base import describe_host  # noqa: E402
from greenpipe.runtime.ort import OrtRunner  # noqa: E402

ROWS = (("vgg", "fp32"), ("vgg_pruned", "fp32"), ("vgg", "ptq8"), ("vgg_pruned", "ptq8"),
        ("mobilenet", "fp32"), ("mobilenet", "ptq8"))


def fps_repeats(artifacts: dict[str, Path], size: int, threads: int, repeats: int, runs: int) -> dict[str, list[float]]:
    """Per artifact, one fps per repeat (1000 / median ms of ``runs`` alternating-block calls)."""
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    runners = {k: OrtRunner(p, threads, 1) for k, p in artifacts.items()}
    fns = {k: (lambda r=r: r.run(x)) for k, r in runners.items()}
    out: dict[str, list[float]] = {k: [] for k in artifacts}
    for _ in range(repeats):
        for k, t in times_ms(fns, runs, warmup=3).items():
            out[k].append(1000.0 / statistics.median(t))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="repository root holding the DVC outputs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=40, help="timed calls per artifact per repeat")
    ap.add_argument("--out", type=Path, help="also write the printed report here")
    args = ap.parse_args(argv)
    root = args.root
    artifacts = {f"{c}-{v}": root / "artifacts/detect/compile" / c / v / "cpu/model.onnx" for c, v in ROWS}
    missing = [str(p) for p in artifacts.values() if not p.is_file()]
    if missing:
        sys.exit(f"missing compiled artifacts {missing}: run `dvc repro detect_eval@vgg detect_eval@vgg_pruned "
                 "detect_eval@mobilenet` first")
    evals = {k: read_json(root / "metrics/detect" / c / f"{v}.json") for k, (c, v) in zip(artifacts, ROWS)}
    prune = read_json(root / "metrics/prune/vgg.json")
    size = evals["vgg-fp32"]["model_args"]["input_size"]
    load = os.getloadavg()
    fps = fps_repeats(artifacts, size, args.threads, args.repeats, args.runs)
    med = {k: statistics.median(v) for k, v in fps.items()}

    def pts(k: str) -> float:
        return 100.0 * evals[k]["map50"]

    lines = [f"detect pruning goals, measured on {describe_host(args.threads)}, load average "
             f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start (a loaded host when above 0: the fps "
             "figures are relative, taken in alternating blocks)",
             f"fps: ONNX Runtime, batch 1, 1x3x{size}x{size}, median of {args.repeats} repeats (min-max), each "
             f"1000 / median of {args.runs} calls; mAP: metrics/detect/<chain>/<variant>.json (pycocotools, val tiles)",
             "", f"{'artifact':<18} {'fps':>8} {'(min-max)':>17} {'mAP@0.5':>8} {'mAP@.5:.95':>10} {'GMACs':>7} {'params':>9}"]
    for k in artifacts:
        e = evals[k]
        lines.append(f"{k:<18} {med[k]:8.1f} {f'({min(fps[k]):.1f}-{max(fps[k]):.1f})':>17} {e['map50']:8.3f} "
                     f"{e['map50_95']:10.3f} {e['macs'] / 1e9:7.3f} {e['params']:9d}")
    gain = 100.0 * (med["vgg_pruned-fp32"] / med["vgg-fp32"] - 1)
    gains = [100.0 * (a / b - 1) for a, b in zip(fps["vgg_pruned-fp32"], fps["vgg-fp32"])]
    goals = [
        ("MACs removed by pruning (VGG SSD)", f"{prune['macs_removed_pct']:.1f} %", ">= 30 %",
         prune["macs_removed_pct"] >= 30, "metrics/prune/vgg.json (counted)"),
        ("fps gain, pruned vs unpruned fp32, ORT CPU b1", f"{gain:+.1f} % (per repeat {min(gains):+.1f}..{max(gains):+.1f})",
         ">= +20 %", gain >= 20, "measured above"),
        ("mAP@0.5 loss after fine-tune (fp32)", f"{pts('vgg-fp32') - pts('vgg_pruned-fp32'):+.2f} points", "<= 1 point",
         pts("vgg-fp32") - pts("vgg_pruned-fp32") <= 1, "eval JSONs"),
        ("int8 on pruned vs fp32 unpruned, mAP@0.5", f"{pts('vgg_pruned-ptq8') - pts('vgg-fp32'):+.2f} points",
         "not below -1.5 points", pts("vgg_pruned-ptq8") - pts("vgg-fp32") >= -1.5, "eval JSONs"),
    ]
    lines += ["", f"{'goal':<46} {'measured':<36} {'target':<18} met  source"]
    lines += [f"{g:<46} {m:<36} {t:<18} {'yes' if ok else 'NO ':<4} {s}" for g, m, t, ok, s in goals]
    light = (f"light backbone (MobileNet SSD) vs VGG SSD, fp32: {med['mobilenet-fp32'] / med['vgg-fp32']:.2f}x the "
             f"fps, mAP@0.5 {pts('mobilenet-fp32') - pts('vgg-fp32'):+.2f} points, "
             f"{evals['mobilenet-fp32']['macs'] / evals['vgg-fp32']['macs']:.2f}x the MACs")
    lines += ["", light,
              "the pruned model trained prune.gate_steps + prune.finetune_steps steps more than the unpruned one "
              "(metrics/prune/vgg.json: val_map50_before / _removed_only / _after): a mAP gain after fine-tune is "
              "that extra training as much as the pruning"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
