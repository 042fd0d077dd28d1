#!/usr/bin/env bash
# Time the README's demo on a fresh clone: clone this repository's HEAD into a
# temp dir, run `make demo` there (venv, installs, dvc repro, summary), then a
# second `dvc repro` with nothing changed. Prints wall times and the time per
# stage; leaves the clone for inspection (path printed at the end).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
git clone -q "$src" "$work/greenpipe"
cd "$work/greenpipe"
start=$(date +%s)
make demo
mid=$(date +%s)
t0=$(date +%s.%N)
PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 dvc repro >"$work/second-repro.log" 2>&1
t1=$(date +%s.%N)
echo
echo "fresh clone -> make demo -> summary: $((mid - start)) s wall (installs included)"
echo "second dvc repro, nothing changed: $(python3 -c "print(round($t1 - $t0, 2))") s; stages run: $(grep -c '^Running stage' "$work/second-repro.log" || true)"
echo "where the stages' time went (benchmarks/stage_times.py):"
.venv/bin/python benchmarks/stage_times.py
echo "clone left at $work/greenpipe"
