"""Stage ``report``: the variant x device table, Pareto plot and markdown summary.

    python -m tasks.report --metrics metrics --out reports/summary

Writes ``summary.md`` (what ``make demo`` prints: one table per recipe with
deploy metrics, ``base.recipe`` first), ``table.csv`` / ``table.json`` (also a
DVC plot source; ``table_<recipe>.csv`` for the others) and ``pareto.png``
(``pareto_<recipe>.png``); with soak results
(``metrics/soak/``) also the power section of ``summary.md`` and
``soak_timeseries.png``; with tuned quantize stages (a ``trials`` log in any
``quantize/`` metrics file) the accuracy-aware tuning section
(greenpipe/report/tuning.py).  With ``--quant`` (the quantize stages' outputs) and
``--data`` (the prepared dataset) also the per-layer quantization-error
section and ``sensitivity.png`` (greenpipe/report/quant.py).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from greenpipe.io import atomic_write_bytes, write_json
from greenpipe.params import Params
from greenpipe.recipes import get_recipe
from greenpipe.report.power import collect_soak, power_markdown, soak_timeseries_plot
from greenpipe.report.quant import sensitivity, sensitivity_markdown, sensitivity_plot
from greenpipe.report.summary import Section, collect, markdown, pareto_plot, recipe_findings, recipes_deployed
from greenpipe.report.tuning import collect_tuning, tuning_markdown
from tasks._cli import run_stage


def report(params: Params, metrics: Path, out: Path, quant: Path | None = None, data: Path | None = None) -> dict:
    """Write the summary of every recipe with deploy metrics under ``metrics`` (``base.recipe`` first)."""
    base = params.base.recipe
    sections = [Section(r, collect(metrics, r, base), r.references(metrics), recipe_findings(r, metrics))
                for r in map(get_recipe, recipes_deployed(metrics, base))]
    rows = sections[0].rows  # base.recipe's: its Pareto plot and its per-layer error section
    soak = collect_soak(metrics)
    layers = sensitivity(rows, quant, data) if quant is not None and data is not None else None
    tuning = tuning_markdown(collect_tuning(metrics))
    extra = "\n".join(part for part in (power_markdown(soak), tuning, sensitivity_markdown(layers) if layers else "")
                      if part)
    text = markdown(sections, extra=extra)
    out.mkdir(parents=True, exist_ok=True)
    if layers:
        sensitivity_plot(layers, out / "sensitivity.png")
    atomic_write_bytes(out / "summary.md", text.encode())
    table = [{"recipe": sec.recipe.name, **r.to_dict()} for sec in sections for r in sec.rows]
    write_json(out / "table.json", table)
    for k, sec in enumerate(sections):  # base.recipe's files keep their plain names (dvc.yaml plots them)
        suffix = "" if k == 0 else f"_{sec.recipe.name}"
        _write_csv(out / f"table{suffix}.csv", [r.to_dict() for r in sec.rows])
        y = params.report.pareto_y if k == 0 else ""  # report.pareto_y names a metric of base.recipe
        pareto_plot(sec.rows, out / f"pareto{suffix}.png", sec.recipe, params.report.pareto_x, y, sec.references)
    if soak:
        soak_timeseries_plot(soak, out / "soak_timeseries.png")
    return {"rows": len(table), "recipes": [sec.recipe.name for sec in sections], "soak_rows": len(soak),
            "sensitivity_variants": list(layers or {})}


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quant", type=Path, help="quantize stage outputs (artifacts/quant): per-layer error section")
    ap.add_argument("--data", type=Path, help="prepared dataset: val crops for the per-layer error section")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: report(params, args.metrics, args.out, args.quant, args.data), args.params, None)


if __name__ == "__main__":
    main()
