"""The CI rule: a test that skips because a declared dependency is missing fails the run."""

from __future__ import annotations

import pytest

from tests.skipcheck import declared_dependency_skip, declared_modules

pytest_plugins = ["pytester"]


def test_declared_modules_map_imports_to_pyproject_dependencies():
    modules = declared_modules()
    assert modules["tensorflow"] == "tensorflow-cpu"  # the import name differs from the distribution's
    assert modules["yaml"] == "pyyaml" and modules["cv2"] == "opencv-python-headless"
    assert "pytorch_nndct" not in modules and "pynvml" not in modules  # not declared: may skip


def test_only_skips_for_declared_dependencies_are_caught():
    modules = declared_modules()
    reason = "could not import 'tensorflow': No module named 'tensorflow'"
    assert declared_dependency_skip(reason, modules) == "tensorflow-cpu (module tensorflow)"
    assert declared_dependency_skip("could not import 'pytorch_nndct': No module named 'pytorch_nndct'", modules) is None
    assert declared_dependency_skip("needs an NVIDIA GPU (nvidia-smi -L lists none here)", modules) is None


def test_a_run_with_such_a_skip_fails_and_says_which(pytester):
    pytester.makepyfile(
        test_inner="""
        import sys
        import pytest

        def test_hidden_gap(monkeypatch):
            monkeypatch.setitem(sys.modules, "yaml", None)  # what a missing pyyaml looks like
            pytest.importorskip("yaml")

        def test_optional_tool():
            pytest.importorskip("no_such_vendor_toolchain")
        """
    )
    result = pytester.runpytest("-p", "tests.skipcheck", "-rs")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*skipped for a missing declared dependency (fails the run)*",
        "test_inner.py::test_hidden_gap: skipped, but pyyaml (module yaml) is declared in pyproject.toml*",
    ])
    assert "test_optional_tool: skipped, but" not in result.stdout.str()
    result.assert_outcomes(skipped=2)


def test_a_run_with_only_undeclared_skips_passes(pytester):
    pytester.makepyfile(test_inner="import pytest\n\ndef test_optional():\n    pytest.importorskip('no_such_vendor_toolchain')\n")
    assert pytester.runpytest("-p", "tests.skipcheck").ret == 0
