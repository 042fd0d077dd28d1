"""The built-in dataset (greenpipe.data.builtin) and the ``greenpipe data`` commands."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from greenpipe.cli_data import app
from greenpipe.data.builtin import locate, materialize, sources
from greenpipe.data.readers import detect_layout
from greenpipe.errors import DataError
from tests.data.fixtures import write_images


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_materialize_copies_real_photos_byte_for_byte(tmp_path):
    records = materialize(tmp_path / "raw")
    assert len(records) >= 8
    assert "motorcycle_right" not in {r["name"] for r in records}
    by_name = {r["name"]: r for r in sources()}
    for record in records:
        path = tmp_path / "raw" / record["file"]
        with Image.open(path) as im:
            im.load()
            assert im.mode in ("RGB", "L") and im.size == (record["width"], record["height"])
        data = path.read_bytes()
        assert data == locate(by_name[record["name"]]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert json.loads((tmp_path / "raw" / "SOURCES.json").read_text()) == records
    assert detect_layout(tmp_path / "raw") == "builtin"


def test_materialize_twice_gives_identical_bytes(tmp_path):
    materialize(tmp_path / "a")
    materialize(tmp_path / "b")
    first = _tree(tmp_path / "a")
    materialize(tmp_path / "a")  # over its own previous copy
    assert _tree(tmp_path / "a") == first == _tree(tmp_path / "b")


def test_every_source_states_licence_attribution_and_where_it_is_stated():
    for record in sources():
        for key in ("name", "package", "module", "path", "licence", "attribution", "stated_in"):
            assert isinstance(record.get(key), str) and record[key].strip(), (record.get("name"), key)
    names = [r["name"] for r in sources()]
    assert len(names) == len(set(names))


def test_materialize_refuses_to_mix_with_other_data(tmp_path):
    write_images(tmp_path / "clean", ["mine"], 16, 16)
    with pytest.raises(DataError, match="clean/mine.png"):
        materialize(tmp_path)
    assert not (tmp_path / "SOURCES.json").exists()


def test_cli_use_copies_a_paired_folder_and_reports_its_layout(tmp_path):
    src = tmp_path / "mine"
    write_images(src / "clean", ["a", "b"], 16, 16)
    write_images(src / "noisy", ["a", "b"], 16, 16, seed=1)
    (src / "notes.txt").write_text("not copied")
    result = CliRunner().invoke(app, ["use", str(src), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    assert "paired" in result.output and "2 sample(s)" in result.output
    assert sorted(_tree(tmp_path / "raw")) == ["clean/a.png", "clean/b.png", "noisy/a.png", "noisy/b.png"]
    assert _tree(tmp_path / "raw")["noisy/a.png"] == (src / "noisy" / "a.png").read_bytes()

    again = CliRunner().invoke(app, ["use", str(src), "--out", str(tmp_path / "raw")])
    assert again.exit_code == 2 and "--force" in again.output


def test_cli_use_refuses_an_unknown_layout(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "readme.md").write_text("?")
    result = CliRunner().invoke(app, ["use", str(tmp_path / "odd"), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 2
    assert "cannot tell the dataset layout" in result.output and "sidd" in result.output
    assert not (tmp_path / "raw").exists()


def test_cli_builtin_and_restore(tmp_path):
    result = CliRunner().invoke(app, ["builtin", str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "raw" / "SOURCES.json").is_file()
    kept = CliRunner().invoke(
        app, ["restore", "--out", str(tmp_path / "raw"), "--dvc-file", str(tmp_path / "none.dvc")]
    )
    assert kept.exit_code == 0 and "already holds" in kept.output
    fresh = CliRunner().invoke(
        app, ["restore", "--out", str(tmp_path / "new"), "--dvc-file", str(tmp_path / "none.dvc")]
    )
    assert fresh.exit_code == 0 and _tree(tmp_path / "new") == _tree(tmp_path / "raw")


def _dvc_repo(path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.chdir(path)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], check=True)


def test_restore_on_a_fresh_clone_matches_the_committed_data_dvc(tmp_path, monkeypatch):
    """What `make demo` does first: no data/, no cache, the repository's data.dvc."""
    import shutil

    repo_dvc = Path(__file__).resolve().parents[2] / "data.dvc"
    _dvc_repo(tmp_path, monkeypatch)
    shutil.copy(repo_dvc, "data.dvc")
    result = CliRunner().invoke(app, ["restore"])
    assert result.exit_code == 0, result.output
    assert Path("data.dvc").read_bytes() == repo_dvc.read_bytes(), "data.dvc must describe the built-in sample"


def test_restore_refuses_when_data_dvc_records_another_dataset(tmp_path, monkeypatch):
    _dvc_repo(tmp_path, monkeypatch)
    other = "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 1\n  nfiles: 1\n  hash: md5\n  path: data\n"
    Path("data.dvc").write_text(other)
    result = CliRunner().invoke(app, ["restore"])
    assert result.exit_code == 2
    assert "dvc pull data.dvc" in result.output
    assert Path("data.dvc").read_text() == other and not Path("data").exists()
