"""Stage ``quantize``: quantize the float model with one variant and export it to ONNX.

    python -m tasks.quantize --variant ptq8 --model models/denoise --calib artifacts/calib \
        --data artifacts/prepared --out artifacts/quant/ptq8 --metrics metrics/quantize/ptq8.json

The work is :func:`greenpipe.quant.stage.quantize_stage`: the variant
(``quantize.variants.<name>`` in params.yaml, a handler in greenpipe/quant/)
is fed the calibration dump at the recipe's boundary, the result is exported
to ONNX and the fake-quant model is scored on val, its val outputs kept as the
compile stage's reference.  Params read: ``base.seed``, ``base.threads``,
``ingest.noise`` and ``train`` (the recipe's training task, read by the
variants that train: qat8, qat4), ``quantize.variants.<name>`` (or ``<recipe>.variants.<name>``
with ``--variants <recipe>.variants``: a recipe's own table).  Output layout:
greenpipe/quant/artifact.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.quant.stage import quantize_stage
from tasks._cli import run_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True, help="key under the variants table (--variants)")
    ap.add_argument("--variants", default="quantize.variants",
                    help="params key of the variants table: quantize.variants or <recipe>.variants")
    ap.add_argument("--model", type=Path, required=True, help="train stage output (checkpoint.pt)")
    ap.add_argument("--calib", type=Path, required=True, help="calib_dump stage output")
    ap.add_argument("--data", type=Path, required=True, help="prepared dataset (its val split is scored)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--net", default="", help="the recipe's network, for a recipe with several (as train's --net); "
                    "only variants that train read it")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    run_stage(
        lambda params: quantize_stage(params, args.variant, args.model, args.calib, args.data, args.out,
                                      args.variants, args.net),
        args.params,
        args.metrics,
    )


if __name__ == "__main__":
    main()
