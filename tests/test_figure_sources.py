"""Every figure of the generated report, and every timing / speed / energy figure of README.md, says where
it came from: measured on which device and runtime, or estimated how, or which setting it is.

The report is generated the way the ``report`` stage writes it, from the committed ``metrics/`` (the
reference run's real outputs). Its rules:

* a table row holding a figure has a ``source`` cell (``[1]``, ``[s2]``) naming a line of the report's
  source lists, and that line says ``measured on <device>, <runtime>`` (deploy) or ``soak on <device>,
  <runtime>; power: <meter or ESTIMATE ...>`` (soak) or ``scored on val by the <stage> stage ...
  <metrics JSON>`` (a tuning trial's fake-quant score); a row of a ``method`` table (other methods on the
  same val data) has a ``- <method>: <source>`` line naming the metrics JSON it comes from;
* a line outside tables and source lists that states a figure (the speed comparisons, the savings) is a
  bullet naming a row that has a source;
* README.md: a sentence stating a time, speed, power or energy (ms, s, min, fps, W, mJ, kWh) names the
  machine or runtime it was measured on, an estimate, or the setting it is (``params.yaml``, a module).
  That each README figure names a committed file holding it is tests/test_readme.py's check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_readme import NUMBER, SENTENCE, blocks

ROOT = Path(__file__).resolve().parents[1]
FIGURE_CELL = re.compile(r"^[+-]?\d+(?:\.\d+)?(?: \([^)]*\))?(?: \(est\.\))?$")  # 31.40, 20.63 (20.26–22.79)
ROW_SOURCE = {"measured": re.compile(r"^measured on \S.*"), "soak": re.compile(r"^soak on \S.*; power: \S.*"),
              "scored": re.compile(r"^scored on val by the \w+ stage .*\bmetrics/[\w/.-]+\.json$")}
METRICS_FILE = re.compile(r"\bmetrics/[\w/.-]+\.json\b")
LINE_FIGURE = re.compile(rf"(?<![\w.])\d+\.\d+(?![\w.])|(?<![\w.]){NUMBER}\s?(?:dB|%|ms|s|fps|W|mJ|kWh|x)(?!\w)")
TIMING = re.compile(rf"(?<![\w.]){NUMBER}(?:\s?(?:-|to|\+-)\s?{NUMBER})?\s?"
                    r"(?:ms|s|min|minutes?|seconds?|hours?|fps|W|mJ|kWh)(?![\w])")
DEVICE_LABEL = re.compile(
    r"measured on|\bon (?:a|the|this|one)\b[^.;]*?\b(?:CPU|GPU|host|machine|board|card)\b|ESTIMATE|\bestimat"
    r"|\bASSUMED\b|`params\.yaml`|`[\w/.-]+\.py`")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _is_list_header(line: str) -> bool:
    return line.endswith(":") and (line.startswith("Where the ") or line == "Meters:")


def source_lists(lines: list[str]) -> tuple[dict[str, str], dict[str, str], set[int]]:
    """The report's source lists: ``{key: text}`` for ``- [key] text``, ``{label: source}`` for
    ``- label: source``, and the indices of every line that belongs to a list."""
    keyed, named, members, inside = {}, {}, set(), False
    for i, line in enumerate(lines):
        if _is_list_header(line):
            inside = True
            members.add(i)
            continue
        if inside and line.startswith("- "):
            members.add(i)
            m = re.match(r"- (\[\w+\]) (.*)", line)
            if m:
                keyed[m[1]] = m[2]
            else:
                label, _, source = line[2:].partition(": ")
                named[label] = source
        elif line.strip():
            inside = False
    return keyed, named, members


def unlabelled(report: str) -> list[str]:
    """The lines of ``report`` (summary.md) stating a figure without a source label (see the module doc)."""
    lines = report.splitlines()
    keyed, named, in_lists = source_lists(lines)
    bad, sourced = [], set()
    header: list[str] = []
    for line in lines:
        if not line.startswith("|"):
            header = []
            continue
        cells = _cells(line)
        if not header:
            header = cells
            continue
        if set(line) <= set("|-: "):  # the alignment row
            continue
        if not any(FIGURE_CELL.match(c) for c in cells[1:]):
            continue
        if "source" in header:
            text = keyed.get(cells[header.index("source")], "")
            if any(p.match(text) for p in ROW_SOURCE.values()):
                sourced.update({cells[0], f"{cells[0]}@{cells[1]}"})
                continue
        elif header[0] == "method" and METRICS_FILE.search(named.get(cells[0], "")):
            continue
        bad.append(line)
    for i, line in enumerate(lines):
        if line.startswith("|") or i in in_lists or not LINE_FIGURE.search(line):
            continue
        names_a_row = any(re.search(rf"(?<![\w@-]){re.escape(label)}(?![\w@-])", line) for label in sourced)
        if not (line.startswith("- ") and names_a_row):
            bad.append(line)
    return bad


def untold(readme: str) -> list[str]:
    """The sentences of ``readme`` stating a time, speed, power or energy without saying on what / how."""
    return [s[:200] for block in blocks(readme) for s in SENTENCE.split(block)
            if TIMING.search(s) and not DEVICE_LABEL.search(s)]


@pytest.fixture(scope="module")
def report_text(tmp_path_factory) -> str:
    from greenpipe.params import load_params
    from tasks.report import report

    out = tmp_path_factory.mktemp("report")
    report(load_params(ROOT / "params.yaml"), ROOT / "metrics", out)
    return (out / "summary.md").read_text()


def test_every_figure_of_the_report_on_the_committed_metrics_has_a_source_label(report_text):
    assert "| source |" in report_text and "## Power soak" in report_text  # deploy and soak tables are checked
    bad = unlabelled(report_text)
    assert not bad, "report lines with a figure but no source label:\n" + "\n".join(bad)


def test_every_timing_speed_and_energy_figure_of_the_readme_says_where_it_was_measured():
    bad = untold((ROOT / "README.md").read_text())
    assert not bad, "README sentences with a timing / power figure but no device, estimate or setting:\n" + \
        "\n".join(bad)


GOOD = """| variant | device | PSNR dB | p90 ms | source |
|---|---|---:|---:|---|
| fp32 | local | 31.51 | 36.81 (33.84–36.94) | [1] |
| ptq8 | local | 31.40 | 20.63 | [1] |

- fp32 vs ptq8 (local): p90 ms 36.81 vs 20.63: ptq8 1.78x lower than fp32

| method | PSNR dB |
|---|---:|
| non-local means | 31.61 |

Where the figures come from (a table row's source column names its line):

- [1] measured on local CPU (AMD EPYC), 2 threads, ONNX Runtime 1.32.0 (CPUExecutionProvider)
- non-local means: metrics/baseline.json (scikit-image)
"""


def test_the_report_check_passes_a_labelled_report_and_names_each_unlabelled_figure():
    assert unlabelled(GOOD) == []
    no_column = GOOD.replace(" | source |", " |").replace(" | [1] |", " |")
    assert unlabelled(no_column) == ["| fp32 | local | 31.51 | 36.81 (33.84–36.94) |",
                                     "| ptq8 | local | 31.40 | 20.63 |",
                                     "- fp32 vs ptq8 (local): p90 ms 36.81 vs 20.63: ptq8 1.78x lower than fp32"]
    unknown = GOOD.replace("- [1] measured on local CPU", "- [1] unknown, local CPU")
    assert len(unlabelled(unknown)) == 3  # a source line that does not say where it was measured
    no_file = GOOD.replace("metrics/baseline.json (scikit-image)", "scikit-image")
    assert unlabelled(no_file) == ["| non-local means | 31.61 |"]
    loose = GOOD + "\nOn average the int8 models are 1.8x faster.\n"
    assert unlabelled(loose) == ["On average the int8 models are 1.8x faster."]


def test_the_readme_check_names_a_timing_without_a_device():
    assert untold("ptq8 runs in 20.6 ms (`metrics/deploy/ptq8-local.json`).\n") == \
        ["ptq8 runs in 20.6 ms (`metrics/deploy/ptq8-local.json`)."]
    assert untold("ptq8 runs in 20.6 ms on this 2-core CPU (`metrics/deploy/ptq8-local.json`).\n") == []
    assert untold("The soak draws 30 W, an ESTIMATE (`metrics/soak/ptq8-local.json`).\n") == []
    assert untold("Each run lasts 60 s (`params.yaml`).\n") == []
    assert untold("PSNR is 31.5 dB (`metrics/deploy/ptq8-local.json`).\n") == []  # quality: not a timing
