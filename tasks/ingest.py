"""Stage ``ingest``: raw dataset (any layout greenpipe reads) -> the prepared layout.

    python -m tasks.ingest --raw data --out artifacts/prepared --metrics metrics/ingest.json

The work is :func:`greenpipe.recipes.denoise.ingest.ingest` (split by whole
image or scene, camera noise for clean-only images, the noise level per split).
Params read: ``base.seed``, ``ingest``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.recipes.denoise.ingest import ingest
from tasks._cli import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the raw dataset for training (DVC stage ingest).")
    parser.add_argument("--raw", type=Path, required=True, help="raw dataset folder (any supported layout)")
    parser.add_argument("--out", type=Path, required=True, help="prepared dataset folder to (re)write")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    run_stage(lambda params: ingest(params, args.raw, args.out), args.params, args.metrics)


if __name__ == "__main__":
    main()
