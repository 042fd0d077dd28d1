"""Stage ``compile``: turn one variant's export into the artifact a target runs, and check it.

    python -m tasks.compile --variant ptq8 --target cpu --quant artifacts/quant/ptq8 \
        --data artifacts/prepared --out artifacts/compile/ptq8/cpu --metrics metrics/compile/ptq8-cpu.json

``compile.targets.<target>.format`` picks the compiler (greenpipe/compile/);
the ``onnx`` one writes ``model.onnx`` + ``compile_report.json`` and fails the
stage when the deployed artifact's val outputs differ from the fake-quant
model's by more than ``agreement_tolerance``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.compile import TARGETS, CompileJob
from greenpipe.errors import GreenpipeError
from greenpipe.params import Params
from tasks._cli import run_stage


def compile_stage(
    params: Params, variant: str, target: str, quant_dir: Path, data_dir: Path, out: Path,
    variants_key: str = "quantize.variants",
) -> dict:
    """Compile ``quant_dir`` for ``target`` into ``out``; return the metrics.  ``variant`` is a key of the
    table at ``variants_key`` (``quantize.variants`` or a recipe's own ``<recipe>.variants``)."""
    targets = params.compile.targets
    if target not in targets:
        raise GreenpipeError(
            f"--target {target}: not in compile.targets (params.yaml has: {', '.join(targets)})"
        )
    variants = params.variant_table(variants_key)
    if variant not in variants:
        raise GreenpipeError(
            f"--variant {variant}: not in {variants_key} (params.yaml has: {', '.join(variants)})"
        )
    target_params = targets[target]
    if target_params.format not in TARGETS:
        raise GreenpipeError(f"compile.targets.{target}.format = {target_params.format!r}: not a registered compile "
                             f"target format; registered: {', '.join(TARGETS.names())}")
    compiler = TARGETS.get(target_params.format)
    job = CompileJob(
        variant=variant,
        target=target,
        params=target_params,
        quant_dir=quant_dir,
        data_dir=data_dir,
        out_dir=out,
        threads=params.base.threads,
    )
    return compiler(job)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True, help="key under the variants table (--variants)")
    ap.add_argument("--variants", default="quantize.variants",
                    help="the variants table: quantize.variants or a recipe's own <recipe>.variants")
    ap.add_argument("--target", required=True, help="key under compile.targets")
    ap.add_argument("--quant", type=Path, required=True, help="quantize stage output of the variant")
    ap.add_argument("--data", type=Path, required=True, help="prepared dataset (val split: agreement check)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    run_stage(
        lambda params: compile_stage(params, args.variant, args.target, args.quant, args.data, args.out,
                                     args.variants),
        args.params,
        args.metrics,
    )


if __name__ == "__main__":
    main()
