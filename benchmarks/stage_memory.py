"""Peak resident memory of every DVC stage, measured by running it again.

    python benchmarks/stage_memory.py            # all stages, forced rerun
    python benchmarks/stage_memory.py train      # some stages

Each stage runs as ``dvc repro --single-item --force <stage>`` in a fresh
process; the peak RSS is the largest of that process's descendants
(getrusage(RUSAGE_CHILDREN).ru_maxrss), i.e. the stage's own Python process.
Run it after `make demo` (it needs the stages' inputs).  Prints a table.
"""

from __future__ import annotations

import subprocess
import sys
import time

PROBE = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run([sys.executable, '-m', 'dvc', 'repro', '--single-item', '--force', sys.argv[1]],"
    " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def main(argv: list[str]) -> int:
    from greenpipe.pipeline import stages

    names = argv or [s.name for s in stages(".")]
    print(f"{'stage':28s} {'peak RSS MB':>12s} {'wall s':>8s}")
    worst = 0.0
    for name in names:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True).stdout.split()
        rc, kb = int(out[0]), int(out[1])
        mb = kb / 1024
        worst = max(worst, mb)
        flag = "" if rc == 0 else f"  (failed, exit {rc})"
        print(f"{name:28s} {mb:12.0f} {time.perf_counter() - t0:8.1f}{flag}")
    print(f"max peak RSS over stages: {worst:.0f} MB (measured: ru_maxrss of each stage process, this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
