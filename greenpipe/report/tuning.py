"""The report's accuracy-aware tuning section: every trial of every tuned quantize stage.

A quantize stage whose variant tunes against the val metric (``inc``: INC's
``autotune``) writes its trial log into its metrics JSON (``trials``, with
``fp32_score``, ``tolerable_loss``, ``chosen_trial``); this section lists each
one, from any ``quantize/`` folder under ``metrics/`` (``metrics/quantize/``,
``metrics/segment/quantize/``, ...)::

    md = tuning_markdown(collect_tuning(Path("metrics")))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from greenpipe.io import read_json
from greenpipe.report.text import num, number


def collect_tuning(metrics: Path) -> list[dict[str, Any]]:
    """Every quantize metrics file under ``metrics`` that holds a trial log, with its path (``file``)."""
    runs = []
    for path in sorted(Path(metrics).glob("**/quantize/*.json")):
        d = read_json(path)
        if isinstance(d.get("trials"), list) and d["trials"]:
            runs.append({"file": path.as_posix(), **d})
    return runs


def _settings(trial: dict[str, Any]) -> str:
    kept = ", ".join(f"`{n}`" for n in trial.get("fp32_layers") or []) or "none"
    return f"| {trial.get('act_algo', '—')} | {trial.get('w_granularity', '—')} | {kept}"


def tuning_markdown(runs: list[dict[str, Any]]) -> str:
    """One table per tuned quantize stage: each trial's settings, score, relative loss and verdict."""
    if not runs:
        return ""
    lines = ["## Accuracy-aware tuning", "",
             "Each trial is a candidate int8 model, calibrated and scored on the val split as a fake-quant "
             "PyTorch model (the candidate itself); it passes when (fp32 - trial) / fp32 <= the tolerable "
             "loss, and tuning stops at the first that does. Trial logs: the quantize stages' metrics files "
             "(`trials`) and `quant_report.json` (`tuning`).", ""]
    sources = []
    for i, run in enumerate(runs, 1):
        key = f"[q{i}]"
        quality = run.get("quality") if isinstance(run.get("quality"), dict) else {}
        metric = quality.get("primary", "score")
        fp32, tol = number(run, "fp32_score"), number(run, "tolerable_loss")
        target = None if fp32 is None or tol is None else fp32 * (1 - tol)
        model = Path(str(run.get("model", ""))).name
        lines += [f"### {model} {run.get('variant')} ({run.get('numerics', 'tuned')})", "",
                  f"| trial | activations | weights | kept float | val {metric} | relative loss | passed | s | source |",
                  "|---:|---|---|---|---:|---:|:-:|---:|---|",
                  f"| fp32 | — | — | — | {num(fp32, '.4g')} | — | — | — | {key} |"]
        for t in run["trials"]:
            lines.append(f"| {t.get('trial')} {_settings(t)} | {num(number(t, 'score'), '.4g')} "
                         f"| {num(number(t, 'relative_loss'), '.4g')} | {'yes' if t.get('passed') else 'no'} "
                         f"| {num(number(t, 'wall_s'), '.1f')} | {key} |")
        lines += ["", f"- tolerable relative loss {num(tol, '.4g')}: a trial passes at val {metric} >= "
                      f"{num(target, '.4g')} (fp32 x (1 - loss)); chosen: trial {run.get('chosen_trial', '—')}.", ""]
        sources.append(f"- {key} scored on val by the quantize stage (the fp32 model, then each trial's fake-quant "
                       f"PyTorch candidate): {run['file']}")
    lines += ["Where the tuning scores come from (a table row's source column names its line):", "", *sources, ""]
    return "\n".join(lines)
