"""The library never imports the stage shells: tasks/ -> greenpipe/, never the other way."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_library_never_imports_tasks():
    offenders = []
    for path in sorted((ROOT / "greenpipe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                          if n == "tasks" or n.startswith("tasks.")]
    assert not offenders, "\n".join(offenders)
