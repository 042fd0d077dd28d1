"""Stage ``baseline``: the best classical denoisers, tuned for the same noise.

    python -m tasks.baseline --data artifacts/prepared --metrics metrics/baseline.json

The work is :func:`greenpipe.recipes.denoise.baseline.baseline`: non-local
means and wavelet shrinkage, strength tuned on train crops, scored on the
whole val images.  Params read: ``baseline``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.recipes.denoise.baseline import baseline
from tasks._cli import run_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: baseline(params, args.data), args.params, args.metrics)


if __name__ == "__main__":
    main()
