"""README.md: every figure names the committed file it comes from.

The convention: a sentence of README.md outside code fences (in a paragraph, a list item, a table row)
that states a figure (a number with a unit: dB, %, ms, s, min, fps, W, mJ, kWh, MB) names, in backticks,
a file committed in this repository that holds it: a metrics JSON written by a stage, ``params.yaml``
for a setting, ``dvc.lock`` ... A figure without a committed source does not belong in the README.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"\d+(?:\.\d+)?"
FIGURE = re.compile(rf"(?<![\w.])({NUMBER})(?:\s?(?:-|to|\+-)\s?({NUMBER}))?\s?"
                    r"(?:dB|%|ms|s|min|minutes?|seconds?|hours?|fps|W|mJ|kWh|MB)(?![\w])")
PATH = re.compile(r"`([\w./-]+\.(?:json|csv|yaml|lock|md|txt|py))`")
# Sentences end at ". " before a capital, a backtick or a bracket (not inside "e.g. " or "2.5 s").
SENTENCE = re.compile(r"(?<=[.])\s+(?=[A-Z`(*])")


def blocks(text: str) -> list[str]:
    """Paragraphs, list items and table rows outside code fences."""
    out, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            current = [] if current == [] else (out.append(" ".join(current)) or [])
            continue
        if fenced:
            continue
        starts_item = line.startswith(("|", "* ", "- ")) or re.match(r"\d+\. ", line)
        if not line.strip() or starts_item:
            if current:
                out.append(" ".join(current))
            current = [line] if line.strip() else []
            if line.startswith("|"):  # a table row is a block of its own
                out.append(line)
                current = []
            continue
        current.append(line)
    if current:
        out.append(" ".join(current))
    return out


def committed() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(files.split())


def _numbers(obj: object) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _numbers(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _numbers(x)]
    return []


def _held(figure: str, values: list[float]) -> bool:
    """Whether a printed figure is one of ``values`` at the printed precision (or a fraction printed as %)."""
    decimals = len(figure.partition(".")[2])
    x = float(figure)
    return any(round(v, decimals) == x or round(100 * v, decimals) == x for v in values)


def unsourced(text: str, files: set[str], root: Path = ROOT) -> list[str]:
    """The sentences of ``text`` that state a figure but name no committed file holding it.

    A sentence naming metrics JSONs only must have each figure in one of them (at its printed precision);
    one that also names a setting's file (``params.yaml``, a module) may state settings.
    """
    bad = []
    for block in blocks(text):
        for sentence in SENTENCE.split(block):
            figures = FIGURE.findall(sentence)
            if not figures:
                continue
            named = [p for p in PATH.findall(sentence) if p in files]
            if not named:
                bad.append(sentence[:200])
                continue
            if all(p.endswith(".json") for p in named):
                values = [v for p in named for v in _numbers(json.loads((root / p).read_text()))]
                if not all(_held(n, values) for pair in figures for n in pair if n):
                    bad.append(sentence[:200])
    return bad


def test_every_readme_figure_names_its_committed_source():
    bad = unsourced((ROOT / "README.md").read_text(), committed())
    assert not bad, "README blocks with a figure but no committed source file named:\n" + "\n".join(bad)


def test_the_check_catches_a_figure_without_a_source(tmp_path):
    (tmp_path / "metrics/deploy").mkdir(parents=True)
    (tmp_path / "metrics/deploy/ptq8-local.json").write_text('{"fps": 70.253, "quality": {"top1": 0.458}}')
    files = {"metrics/deploy/ptq8-local.json", "params.yaml"}
    check = functools.partial(unsourced, root=tmp_path)
    assert check("ptq8 runs at 70.3 fps.\n", files) == ["ptq8 runs at 70.3 fps."]
    assert check("ptq8 runs at 70.3 fps (`metrics/deploy/ptq8-local.json`).\n", files) == []
    assert check("ptq8 runs at 70.3 fps (`metrics/deploy/gone.json`).\n", files) != []  # not committed
    assert check("```\n70 fps\n```\n", files) == []  # code is not prose
    assert check("| a | 31.5 dB |\n| b | `params.yaml` |\n", files) == ["| a | 31.5 dB |"]
    # The source must be in the figure's own sentence, not somewhere in its paragraph.
    two = "ptq8 runs at 70.3 fps (`metrics/deploy/ptq8-local.json`). Eight seeds gave 31.3 dB on average."
    assert check(two, files) == ["Eight seeds gave 31.3 dB on average."]
    # A JSON named as the source must hold the figure; a fraction may be printed as a percentage.
    assert check("ptq8 runs at 71.0 fps (`metrics/deploy/ptq8-local.json`).", files) != []
    assert check("top-1 45.8 % (`metrics/deploy/ptq8-local.json`).", files) == []
    assert check("each run lasts 60 s (`params.yaml`).", files) == []  # a setting
