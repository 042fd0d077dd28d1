"""Where a finished `dvc repro` spent its time, stage by stage, from when each stage's metrics file was written.

    .venv/bin/python benchmarks/stage_times.py [--since FILE]   # in a checkout after `make demo`

A stage's time is the gap between its metrics file and the one written before it (DVC runs stages one
after another, in the order it prints), so it includes the stage's process start and imports. The
first gap is counted from ``--since`` (default: ``.venv/.installed``, the end of `make setup`).
A matrix stage's runs are one line (deploy, soak, quantize, compile, video/deploy, ...). A stage that
writes no metrics file (report) is not counted.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path


MATRIX_FOLDERS = ("quantize", "compile", "deploy", "soak")


def stage_times(metrics: Path, since: Path) -> list[tuple[str, float]]:
    """(metrics file, seconds since the previous one), in the order they were written."""
    files = sorted((p for p in metrics.rglob("*.json")), key=lambda p: p.stat().st_mtime)
    prev = since.stat().st_mtime
    out = []
    for path in files:
        t = path.stat().st_mtime
        out.append((str(path.relative_to(metrics.parent)), t - prev))
        prev = t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", type=Path, default=Path("metrics"))
    ap.add_argument("--since", type=Path, default=Path(".venv/.installed"))
    args = ap.parse_args()
    rows = stage_times(args.metrics, args.since)
    groups: dict[str, float] = defaultdict(float)
    for name, seconds in rows:
        path = Path(name).relative_to(args.metrics.name)
        # A matrix stage's files share a folder (deploy/, video/soak/, ...): one line for all of them.
        key = path.parent if path.parent.name in MATRIX_FOLDERS else path.with_suffix("")
        groups[key.as_posix()] += seconds
    width = max(len(k) for k in groups)
    for key, seconds in groups.items():
        print(f"{key:{width}s} {seconds:8.1f} s")
    print(f"{'all stages':{width}s} {sum(groups.values()):8.1f} s (from {args.since})")


if __name__ == "__main__":
    main()
