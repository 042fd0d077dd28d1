"""Stage ``prune``: LKAM kernel pruning of a trained model whose recipe declares prunable convolutions.

    python -m tasks.prune --model models/detect/vgg --net vgg --data artifacts/detect/data \
        --out models/detect/vgg_pruned --figures reports/prune/vgg --metrics metrics/prune/vgg.json

Between train and the calibration dump: gate training with the sparsity term, per-kernel
utilisation (``--figures``: utilisation.json and the per-layer plot), static removal below
``prune.threshold``, fine-tune (greenpipe/prune/stage.py).  ``--net`` names the recipe's network
(its training batches), for a recipe with several.  The output is a checkpoint like the train
stage's, so calib_dump, quantize and compile take it unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.prune.stage import prune_stage
from tasks._cli import run_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="train stage output (checkpoint.pt)")
    ap.add_argument("--net", default="", help="which of the recipe's networks, for a recipe with several")
    ap.add_argument("--data", type=Path, required=True, help="prepared dataset (train batches, val scores)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--figures", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: prune_stage(params, args.model, args.data, args.out, args.figures, args.net),
              args.params, args.metrics)


if __name__ == "__main__":
    main()
