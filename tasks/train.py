"""Stage ``train``: fit the recipe's float model on the prepared train split.

    python -m tasks.train --data data/prepared --validated metrics/validate.json \
        --out models/denoise --metrics metrics/train.json --curve metrics/train_curve.csv

The loop is the shared trainer (greenpipe/train.py: Adam with a cosine
schedule, weight average, bf16 where the CPU has it, per-epoch validation);
the recipe gives its batches and loss (for denoise:
greenpipe/recipes/denoise/training.py).  ``--recipe`` (default ``base.recipe``) and
``--net`` pick another recipe's network (``--recipe segment --net hrnet``).
Deterministic under ``base.seed``.
The state is saved after every epoch to ``--resume-state`` so a killed run
resumes where it stopped, with the same result as an uninterrupted one; the
file is removed when training completes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.errors import DataError
from greenpipe.io import read_json
from greenpipe.params import Params
from greenpipe.train import train
from tasks._cli import run_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--validated", type=Path, required=True, help="metrics of the validate stage")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--curve", type=Path, required=True)
    ap.add_argument("--resume-state", type=Path, default=Path(".greenpipe/train-resume.pt"))
    ap.add_argument("--recipe", default="", help="a registered recipe (default: base.recipe)")
    ap.add_argument("--net", default="", help="which of the recipe's networks, for a recipe with several")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    def stage(params: Params) -> dict:
        if not read_json(args.validated).get("success", False):
            raise DataError(f"{args.validated}: the data did not pass validation; see reports/validate")
        return train(params, args.data, args.out, args.curve, args.resume_state, args.recipe, args.net)

    run_stage(stage, args.params, args.metrics)


if __name__ == "__main__":
    main()
