"""Stage ``validate``: check the prepared dataset with Great Expectations before training.

    python -m tasks.validate --data artifacts/prepared --reports reports/validate --metrics metrics/validate.json

The work is :func:`greenpipe.recipes.denoise.validate.validate` (the checks:
sizes, channels, bit depth, pairs, noise level, train/val overlap, split
sizes; the GX runner and the report: greenpipe/validate.py).  Params read:
``validate``.  Always writes ``--metrics`` (success, counts, failures per
expectation) and, under ``--reports``, ``result.json``, ``files.csv``,
``failures.txt`` and ``index.html``.  On failure it prints every bad file with
the expectation it failed and exits with status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.errors import GreenpipeError
from greenpipe.io import write_json
from greenpipe.params import load_params
from greenpipe.recipes.denoise.validate import validate
from greenpipe.validate import ValidationFailed
from tasks._cli import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Validate the prepared dataset (DVC stage validate).")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument(
        "--reports", type=Path, required=True, help="folder for result.json, files.csv, index.html"
    )
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    def stage() -> None:
        try:
            metrics = validate(load_params(args.params), args.data, args.reports)
        except ValidationFailed as exc:
            write_json(args.metrics, exc.metrics)
            raise
        except GreenpipeError as exc:
            # Metrics are always written, so `dvc metrics show` says why there are none.
            write_json(args.metrics, {"success": False, "error": str(exc)})
            raise
        write_json(args.metrics, metrics)

    run_stage(stage)


if __name__ == "__main__":
    main()
