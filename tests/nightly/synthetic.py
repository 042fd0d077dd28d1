"""A small DVC project shaped like greenpipe's DAG, with stages that take seconds, for nightly tests.

    prepare -> quantize@V -> compile@V -> deploy@V-D, soak@V-D -> report

Real DVC (git + dvc init, foreach / matrix, a params file of its own: ``synth.yaml``) and a real
greenpipe ``params.yaml`` (its ``nightly`` section is what the flow reads). Each command is
``python stage.py <kind> ...``: deterministic outputs (so dvc.lock can be compared byte for byte),
``work_s`` x the variant's ``work`` seconds of work in each quantize command (sleep, or a busy loop
when ``burn: true``; the other commands are instant; ``work_s`` is no stage's param, so changing it
reruns nothing by itself), a failure when the variant
says ``fail: true``, and a line per command in ``timeline.log`` (start, end: which commands ran, and
whether they overlapped). deploy writes a quality record, score = 30 x gain dB, and fps = 100 x gain; soak writes
mj_per_inference = 50 / gain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

STAGE_PY = r"""
import json, os, sys, time
from pathlib import Path

import yaml

kind, args = sys.argv[1], sys.argv[2:]
synth = yaml.safe_load(Path("synth.yaml").read_text())
variant = args[0] if args else None
cfg = synth["variants"].get(variant, {}) if variant else {}
t0 = time.time()
work = float(synth["work_s"]) * float(cfg.get("work", 1.0)) if kind == "quantize" else 0.0
if synth.get("burn"):
    x = 0
    while time.time() - t0 < work:
        x += 1
else:
    time.sleep(work)
if kind == "quantize" and cfg.get("fail"):
    sys.exit(f"quantize {variant}: planted failure (synth.yaml variants.{variant}.fail)")
gain = float(cfg.get("gain", 1.0))


def write(path, obj):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, sort_keys=True) + "\n")


if kind == "prepare":
    write("artifacts/prepared/data.json", {"n": 4})
elif kind == "quantize":
    write(f"artifacts/quant/{variant}/model.json",
          {"variant": variant, "gain": gain, "rev": cfg.get("rev", 0)})
elif kind == "compile":
    q = json.loads(Path(f"artifacts/quant/{variant}/model.json").read_text())
    write(f"artifacts/compile/{variant}/model.json", {"compiled": q})
elif kind == "deploy":
    device = args[1]
    write(f"artifacts/deploy/{variant}-{device}/rows.json", {"ok": True})
    write(f"metrics/deploy/{variant}-{device}.json",
          {"variant": variant, "device_name": device, "score": round(30 * gain, 6), "fps": round(100 * gain, 6),
           "quality": {"primary": "score", "value": round(30 * gain, 6), "higher_is_better": True, "unit": "dB",
                       "values": {"score": round(30 * gain, 6)}}})
elif kind == "soak":
    device = args[1]
    write(f"artifacts/soak/{variant}-{device}/series.json", {"ok": True})
    write(f"metrics/soak/{variant}-{device}.json",
          {"variant": variant, "device_name": device, "mj_per_inference": round(50 / gain, 6),
           "power_measured": False, "meter": {"name": "estimate", "scope": "estimate", "measured": False}})
elif kind == "report":
    rows = sorted(p.name for p in Path("metrics/deploy").glob("*.json"))
    write("reports/summary/table.json", {"rows": rows})
with open("timeline.log", "a") as f:
    f.write(f"{kind}{'@' + '-'.join(args) if args else ''} {t0:.3f} {time.time():.3f}\n")
"""

DVC_YAML = """\
vars:
  - synth.yaml
stages:
  prepare:
    cmd: python stage.py prepare
    deps:
      - stage.py
    outs:
      - artifacts/prepared
  quantize:
    foreach: ${variants}
    do:
      cmd: python stage.py quantize ${key}
      deps:
        - artifacts/prepared
        - stage.py
      params:
        - synth.yaml:
            - variants.${key}
      outs:
        - artifacts/quant/${key}
  compile:
    foreach: ${variants}
    do:
      cmd: python stage.py compile ${key}
      deps:
        - artifacts/quant/${key}
        - stage.py
      outs:
        - artifacts/compile/${key}
  deploy:
    matrix:
      variant: ${variants}
      device: ${devices}
    cmd: python stage.py deploy ${item.variant} ${item.device}
    deps:
      - artifacts/compile/${item.variant}
      - stage.py
    outs:
      - artifacts/deploy/${item.variant}-${item.device}
    metrics:
      - metrics/deploy/${item.variant}-${item.device}.json:
          cache: false
  soak:
    matrix:
      variant: ${variants}
      device: ${devices}
    cmd: python stage.py soak ${item.variant} ${item.device}
    deps:
      - artifacts/compile/${item.variant}
      - stage.py
    outs:
      - artifacts/soak/${item.variant}-${item.device}
    metrics:
      - metrics/soak/${item.variant}-${item.device}.json:
          cache: false
  report:
    cmd: python stage.py report
    deps:
      - metrics/deploy
      - metrics/soak
      - stage.py
    outs:
      - reports/summary
"""


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    env = dict(os.environ if env is None else env)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    )
    return proc.stdout + proc.stderr


def make(
    path: Path,
    variants: dict | None = None,
    devices: tuple[str, ...] = ("local",),
    work_s: float = 0.0,
    burn: bool = False,
    nightly: dict | None = None,
) -> Path:
    """Create the project in ``path`` (a git repo with one commit on ``main``); return ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    variants = variants or {"a": {"gain": 1.0}, "b": {"gain": 1.0}}
    (path / "stage.py").write_text(STAGE_PY)
    (path / "dvc.yaml").write_text(DVC_YAML)
    synth = {"work_s": work_s, "burn": burn, "variants": variants, "devices": {d: {} for d in devices}}
    (path / "synth.yaml").write_text(yaml.safe_dump(synth, sort_keys=False))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["nightly"] = {
        **params.get("nightly", {}),
        "retries": 0,
        "retry_delay_s": 0,
        "dvc_push": False,
        **(nightly or {}),
    }
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (path / ".gitignore").write_text("timeline.log\n")
    run(["git", "init", "-q", "-b", "main"], path)
    run(["git", "config", "user.email", "test@greenpipe.invalid"], path)
    run(["git", "config", "user.name", "greenpipe test"], path)
    run([sys.executable, "-m", "dvc", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-q", "-m", "synthetic project"], path)
    return path


def set_variant(path: Path, variant: str, **values) -> None:
    """Change ``synth.yaml``'s ``variants.<variant>`` keys (what a param edit would be)."""
    synth = yaml.safe_load((path / "synth.yaml").read_text())
    synth["variants"][variant].update(values)
    (path / "synth.yaml").write_text(yaml.safe_dump(synth, sort_keys=False))


def set_work(path: Path, work_s: float, burn: bool | None = None) -> None:
    synth = yaml.safe_load((path / "synth.yaml").read_text())
    synth["work_s"] = work_s
    if burn is not None:
        synth["burn"] = burn
    (path / "synth.yaml").write_text(yaml.safe_dump(synth, sort_keys=False))


def timeline(path: Path) -> list[tuple[str, float, float]]:
    """(command, start, end) per executed command, from timeline.log; [] if none ran."""
    log = path / "timeline.log"
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        name, start, end = line.split()
        out.append((name, float(start), float(end)))
    return out


def clear_timeline(path: Path) -> None:
    (path / "timeline.log").unlink(missing_ok=True)


def copy(src: Path, dst: Path) -> Path:
    """A twin of the project (its .git and .dvc included) for a side-by-side comparison."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
