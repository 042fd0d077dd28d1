#!/usr/bin/env bash
# Time the README's demo on a fresh clone: clone this repository's HEAD into a
# temp dir, run `make demo` there (venv, installs, dvc repro, summary), then a
# second `dvc repro` with nothing changed. Prints wall times and the time per
# stage, and writes the same lines to fresh_clone_demo.txt beside the clone
# (commit it as benchmarks/results/fresh_clone_demo.txt with the run's dvc.lock
# and metrics/); leaves the clone for inspection (path printed at the end).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
git clone -q "$src" "$work/greenpipe"
cd "$work/greenpipe"
start=$(date +%s)
make demo
mid=$(date +%s)
noop=()
for i in 1 2 3 4 5; do  # a no-op repro, five times: its median and range
  t0=$(date +%s.%N)
  PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 dvc repro >"$work/second-repro.log" 2>&1
  t1=$(date +%s.%N)
  noop+=("$(python3 -c "print(round($t1 - $t0, 2))")")
done
summary="$work/fresh_clone_demo.txt"
{
echo "commit $(git rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "fresh clone -> make demo -> summary: $((mid - start)) s wall (installs included)"
echo "dvc repro again, nothing changed, 5 runs: median $(python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "${noop[@]}") s (${noop[*]} s); stages run: $(grep -c '^Running stage' "$work/second-repro.log" || true)"
echo "where the stages' time went (benchmarks/stage_times.py):"
.venv/bin/python benchmarks/stage_times.py
} | tee "$summary"
echo "clone left at $work/greenpipe; summary in $summary"
