"""Stage ``soak``: energy per inference of a compiled artifact on a device, measured the MLPerf Power way.

    python -m tasks.soak --variant ptq8 --device local --compiled artifacts/compile/ptq8 \
        --checkpoint .greenpipe/soak/ptq8-local --out artifacts/soak/ptq8-local \
        --metrics metrics/soak/ptq8-local.json [--report-partial]

Idle baseline, warm-up, then ``soak.duration_s`` of back-to-back runs while the
device's meter is sampled; on a remote device the host runs it through the farm.
``--report-partial`` reports what an unfinished soak holds, marked partial.
The logic is :func:`greenpipe.soak.soak_stage` (the loop: :mod:`greenpipe.power.soak`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.soak import soak_stage
from tasks._cli import run_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True, help="key under quantize.variants")
    ap.add_argument("--device", required=True, help="key under deploy.devices")
    ap.add_argument("--compiled", type=Path, required=True, help="compile stage outputs of the variant (all targets)")
    ap.add_argument("--checkpoint", type=Path, required=True,
                    help="directory for the in-progress time series (outside the DVC output, so it survives a rerun)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--report-partial", action="store_true",
                    help="report what the checkpoint (or, for a remote device, the result store) holds, "
                         "marked partial, without running")
    args = ap.parse_args(argv)

    run_stage(
        lambda params: soak_stage(params, args.variant, args.device, args.compiled, args.checkpoint, args.out,
                                  args.report_partial),
        args.params,
        args.metrics,
    )


if __name__ == "__main__":
    main()
