"""infra/agent: the install script (dry run, argument checks, board dependency group) and the systemd unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "infra" / "agent"
INSTALL = AGENT / "install.sh"


def install(*args: str, script: Path = INSTALL, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}  # nothing from the caller's Prefect/AWS setup
    return subprocess.run(
        ["bash", str(script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


def fake_checkout(root: Path, board: list[str] | None) -> Path:
    """A checkout holding only infra/agent and a pyproject.toml with (or without) a board group."""
    shutil.copytree(AGENT, root / "infra" / "agent")
    listed = ", ".join(f'"{d}"' for d in board or [])
    extras = "" if board is None else f"[project.optional-dependencies]\nboard = [{listed}]\n"
    (root / "pyproject.toml").write_text(f'[project]\nname = "greenpipe"\nversion = "0"\n{extras}')
    return root / "infra" / "agent" / "install.sh"


def common(tmp_path: Path) -> list[str]:
    return [
        "--api-url",
        "http://127.0.0.1:4200/api",
        "--python",
        sys.executable,
        "--prefix",
        str(tmp_path / "opt"),
        "--env-file",
        str(tmp_path / "etc" / "agent.env"),
        "--unit-dir",
        str(tmp_path / "units"),
    ]


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(INSTALL)], check=False).returncode == 0


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path):
    out = install("--pool", "gpu", "--queue", "gpu-host-1", "--kind", "gpu", "--dry-run", *common(tmp_path))
    assert out.returncode == 0, out.stderr
    steps = out.stdout
    prefix = tmp_path / "opt"
    assert f"+ {sys.executable} -m venv {prefix}/venv" in steps
    assert f"-m pip install --disable-pip-version-check {prefix}/src[gpu]" in steps
    assert (
        f"write {tmp_path}/etc/agent.env (mode 600): GREENPIPE_POOL=gpu PREFECT_API_URL=http://127.0.0.1:4200/api"
        in steps
    )
    assert f"install {AGENT}/greenpipe-agent@.service -> {tmp_path}/units/greenpipe-agent@.service" in steps
    assert "+ systemctl enable greenpipe-agent@gpu-host-1.service" in steps
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_board_kinds_install_greenpipe_without_deps_plus_the_board_group(tmp_path):
    script = fake_checkout(tmp_path / "co", ["boto3>=1.34", "numpy>=1.26"])
    out = install(
        "--pool",
        "zcu104",
        "--queue",
        "zcu104-1",
        "--kind",
        "zcu104",
        "--dry-run",
        *common(tmp_path),
        script=script,
    )
    assert out.returncode == 0, out.stderr
    prefix = tmp_path / "opt"
    assert f"-m venv --system-site-packages {prefix}/venv" in out.stdout  # vart / xir of the board image
    assert f"pip install --disable-pip-version-check --no-deps {prefix}/src\n" in out.stdout
    assert "pip install --disable-pip-version-check boto3>=1.34 numpy>=1.26\n" in out.stdout
    assert "torch" not in out.stdout


def test_checkout_without_board_group_fails_before_any_step(tmp_path):
    script = fake_checkout(tmp_path / "co", None)
    out = install(
        "--pool", "cpu-hosts", "--queue", "cpu-host-1", "--dry-run", *common(tmp_path), script=script
    )
    assert out.returncode == 2
    assert "no [project.optional-dependencies] board group" in out.stderr
    assert "+ " not in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue", "q"], "no work pool: pass --pool"),
        (["--pool", "p"], "no work queue: pass --queue"),
        (["--pool", "p", "--queue", "a b"], "queue 'a b': use letters, digits and _ . : - only"),
        (["--pool", "p", "--queue", "q", "--kind", "jetson"], "kind 'jetson': expected cpu, gpu, zcu104"),
        (["--pool", "p", "--queue", "q", "--bogus"], "unknown argument '--bogus'"),
    ],
)
def test_bad_arguments_name_what_is_wrong(tmp_path, args, message):
    out = install(*args, "--dry-run", *common(tmp_path))
    assert out.returncode == 2 and message in out.stderr


def test_api_url_is_required(tmp_path):
    out = install("--pool", "p", "--queue", "q", "--dry-run", "--python", sys.executable)
    assert out.returncode == 2 and "no Prefect API: pass --api-url (or set PREFECT_API_URL)" in out.stderr


def test_unit_runs_the_queue_worker_from_the_env_file():
    unit = (AGENT / "greenpipe-agent@.service").read_text()
    assert "EnvironmentFile=/etc/greenpipe/agent.env" in unit
    assert "Restart=always" in unit
    assert re.search(
        r"^ExecStart=\S+/prefect worker start --pool \$\{GREENPIPE_POOL\} --work-queue %i --type process",
        unit,
        re.MULTILINE,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (package systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # The installed form: paths substituted as install.sh does, the worker binary this checkout's prefect.
    (tmp_path / "agent.env").write_text((AGENT / "agent.env.example").read_text())
    unit = (AGENT / "greenpipe-agent@.service").read_text()
    unit = unit.replace("/opt/greenpipe-agent/venv/bin/prefect", str(Path(sys.executable).parent / "prefect"))
    unit = unit.replace("/etc/greenpipe/agent.env", str(tmp_path / "agent.env")).replace(
        "User=greenpipe", "User=root"
    )
    path = tmp_path / "greenpipe-agent@host-1.service"
    path.write_text(unit)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(path)], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_env_example_holds_placeholders_only():
    values = dict(
        line.split("=", 1)
        for line in (AGENT / "agent.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert values["AWS_ACCESS_KEY_ID"] == values["AWS_SECRET_ACCESS_KEY"] == "REPLACE_ME"
    assert (
        "example.internal" in values["PREFECT_API_URL"]
        and "example.internal" in values["AWS_ENDPOINT_URL_S3"]
    )
