"""Stage shell for a recipe's own stages (``Recipe.stages``): ingest, validate, eval, ...

    python -m tasks.recipe_stage --recipe segment --stage ingest --path photos=data/clean \
        --path out=artifacts/segment/data --metrics metrics/segment/ingest.json

``--path NAME=PATH`` (repeatable) hands the stage its inputs and outputs, written
in dvc.yaml only; the stage function is ``Recipe.stages[<stage>](params, paths)``
and returns the metrics.  A recipe adds a stage in its own package, with no
new file here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greenpipe.errors import GreenpipeError
from greenpipe.params import Params
from greenpipe.recipes import get_recipe
from tasks._cli import run_stage


def recipe_stage(params: Params, recipe: str, stage: str, paths: dict[str, Path]) -> dict:
    stages = getattr(get_recipe(recipe), "stages", {})
    if stage not in stages:
        raise GreenpipeError(f"--stage {stage}: recipe {recipe} has no such stage "
                             f"(it has: {', '.join(stages) or 'none'})")
    return stages[stage](params, paths)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True, help="a registered recipe (greenpipe.recipes)")
    ap.add_argument("--stage", required=True, help="a key of the recipe's stages")
    ap.add_argument("--path", action="append", default=[], metavar="NAME=PATH", help="an input or output")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    bad = [p for p in args.path if "=" not in p]
    if bad:
        ap.error(f"--path {bad[0]}: expected NAME=PATH")
    paths = {k: Path(v) for k, v in (p.split("=", 1) for p in args.path)}
    run_stage(lambda params: recipe_stage(params, args.recipe, args.stage, paths), args.params, args.metrics)


if __name__ == "__main__":
    main()
