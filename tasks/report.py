"""Stage ``report``: the variant x device table, Pareto plot and markdown summary.

    python -m tasks.report --metrics metrics --out reports/summary

Writes ``summary.md`` (what ``make demo`` prints), ``table.csv`` /
``table.json`` (also a DVC plot source) and ``pareto.png``; with soak results
(``metrics/soak/``) also the power section of ``summary.md`` and
``soak_timeseries.png``.  With ``--quant`` (the quantize stages' outputs) and
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
from greenpipe.report.summary import collect, markdown, pareto_plot
from tasks._cli import run_stage


def report(params: Params, metrics: Path, out: Path, quant: Path | None = None, data: Path | None = None) -> dict:
    recipe = get_recipe(params.base.recipe)
    rows = collect(metrics, recipe)
    references = recipe.references(metrics)
    size = params.deploy.input_size
    soak = collect_soak(metrics)
    layers = sensitivity(rows, quant, data) if quant is not None and data is not None else None
    extra = "\n".join(part for part in (power_markdown(soak), sensitivity_markdown(layers) if layers else "") if part)
    text = markdown(rows, recipe, references, input_desc=f"1x3x{size}x{size} inputs", extra=extra)
    out.mkdir(parents=True, exist_ok=True)
    if layers:
        sensitivity_plot(layers, out / "sensitivity.png")
    atomic_write_bytes(out / "summary.md", text.encode())
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0].to_dict()))
        writer.writeheader()
        writer.writerows(r.to_dict() for r in rows)
    atomic_write_bytes(out / "table.csv", buf.getvalue().encode())
    write_json(out / "table.json", [r.to_dict() for r in rows])
    pareto_plot(rows, out / "pareto.png", recipe, params.report.pareto_x, params.report.pareto_y, references)
    if soak:
        soak_timeseries_plot(soak, out / "soak_timeseries.png")
    return {"rows": len(rows), "soak_rows": len(soak), "sensitivity_variants": list(layers or {})}


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
