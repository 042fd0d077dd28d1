"""pytest plugin: a test skipped because a *declared* dependency is missing fails the run.

pyproject.toml declares what greenpipe needs (``[project] dependencies`` and
the ``dev`` extra the tests install).  A test that skips because one of those
cannot be imported (``pytest.importorskip``, a ``skip`` whose reason is an
ImportError) hides a broken install rather than an absent optional tool, so
the run ends with exit status 1 and a section listing each such skip.  Skips
for what is not declared (the Vitis AI toolchain, an NVIDIA driver, a board)
stay skips, with their reasons in the ``-ra`` summary.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# What importorskip and ImportError say: "could not import 'tensorflow': ...", "No module named 'cv2'".
_MODULE = re.compile(r"(?:could not import|No module named) '([\w.]+)'")


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0]


def declared_modules(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """Top-level module -> declared distribution, for ``dependencies`` and the ``dev`` extra.

    The module names come from each installed distribution's files; a distribution that is not
    installed at all is looked up by its normalised name (``tensorflow-cpu`` -> ``tensorflow_cpu``),
    and its missing install is then what the skip reason shows.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    dists = [_dist_name(r) for r in project["dependencies"] + project["optional-dependencies"].get("dev", [])]
    by_dist: dict[str, list[str]] = {}
    for module, owners in importlib.metadata.packages_distributions().items():
        for owner in owners:
            by_dist.setdefault(owner.lower().replace("_", "-"), []).append(module)
    modules = {}
    for dist in dists:
        key = dist.lower().replace("_", "-")
        for module in by_dist.get(key, [key.replace("-", "_")]):
            modules[module] = dist
    return modules


def declared_dependency_skip(reason: str, modules: dict[str, str]) -> str | None:
    """The declared distribution a skip ``reason`` says is missing, or None when it names none."""
    match = _MODULE.search(reason)
    if match is None:
        return None
    module = match.group(1).split(".")[0]
    return f"{modules[module]} (module {module})" if module in modules else None


class SkipCheck:
    def __init__(self) -> None:
        self.modules = declared_modules()
        self.offending: list[str] = []

    def _check(self, report) -> None:
        if not report.skipped or not isinstance(report.longrepr, tuple):
            return
        reason = str(report.longrepr[2])
        dist = declared_dependency_skip(reason, self.modules)
        if dist is not None:
            self.offending.append(f"{report.nodeid}: skipped, but {dist} is declared in pyproject.toml ({reason})")

    def pytest_runtest_logreport(self, report) -> None:
        self._check(report)

    def pytest_collectreport(self, report) -> None:
        self._check(report)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.offending:
            terminalreporter.section("skipped for a missing declared dependency (fails the run)", red=True)
            for line in self.offending:
                terminalreporter.line(line)
            terminalreporter.line("Fix: install the project with its dependencies (`make test`), then rerun.")

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if self.offending and exitstatus in (0, 5):
            session.exitstatus = 1


def pytest_configure(config) -> None:
    config.pluginmanager.register(SkipCheck(), "greenpipe-skipcheck")
