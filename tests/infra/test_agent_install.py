"""infra/agent: the install script (dry run, argument checks, board dependency group) and the systemd unit."""

from __future__ import annotations

import os
import re
import shutil
import stat
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
    as_user = "runuser -u greenpipe -- env PIP_NO_CACHE_DIR=1 " if os.geteuid() == 0 else ""  # never pip as root
    assert f"+ {as_user}{sys.executable} -m venv {prefix}/venv" in steps
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


# A PEP 517 backend that builds an empty "greenpipe" wheel offline: enough for install.sh's pip step.
FAKE_BACKEND = """
import base64, hashlib, os, zipfile

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    dist = "greenpipe-0.dist-info"
    files = {f"{dist}/METADATA": b"Metadata-Version: 2.1\\nName: greenpipe\\nVersion: 0\\n",
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
    digest = lambda v: base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b"=").decode()
    record = "".join(f"{k},sha256={digest(v)},{len(v)}\\n" for k, v in files.items()) + f"{dist}/RECORD,,\\n"
    name = "greenpipe-0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{dist}/RECORD", record)
    return name
"""
# Programs install.sh runs: each is wrapped to log its argv, so the test sees every command line.
WRAPPED = ("sed", "tar", "mkdir", "chmod", "chown", "mv", "rm", "cp", "cat", "env", "runuser", "id", "dirname",
           "useradd", "systemctl", "tee", "install", "printf", "echo")


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3.11").exists() or shutil.which("runuser") is None,
                    reason="needs root (the install drops to another account), runuser and /usr/bin/python3.11")
def test_a_real_install_keeps_secrets_off_command_lines_and_pip_off_root(tmp_path):
    import tempfile

    # Under /tmp, world-traversable: the unprivileged account must reach the prefix.
    top = Path(tempfile.mkdtemp(prefix="greenpipe-install-"))
    try:
        os.chmod(top, 0o755)
        script = fake_checkout(top / "co", [])
        pyproject = top / "co" / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                             'backend-path = ["."]\n')
        (top / "co" / "backend.py").write_text(FAKE_BACKEND)
        for p in [top / "co", *(top / "co").rglob("*")]:
            os.chown(p, 12345, 12345)  # the tarball's uid must not survive into the install
            os.chmod(p, os.stat(p).st_mode | 0o005 | (0o001 if p.is_dir() else 0))
        shims, log = top / "shims", top / "argv.log"
        shims.mkdir()
        for name in WRAPPED:
            real = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
            if real:
                (shims / name).write_text(f'#!/bin/bash\nprintf "%s\\n" "{name} $*" >>{log}\nexec {real} "$@"\n')
                (shims / name).chmod(0o755)
        secrets = {"PREFECT_API_AUTH_STRING": "greenpipe:a&b|c$d\\e", "AWS_SECRET_ACCESS_KEY": "s3cr&t/x+y",
                   "AWS_ACCESS_KEY_ID": "AKIDHOST1", "GREENPIPE_AGENT_KEY": "ab" * 32}  # fmt: skip
        env_file = top / "etc" / "agent.env"
        out = install("--pool", "cpu-hosts", "--queue", "cpu-host-1", "--api-url", "http://127.0.0.1:4200/api",
                      "--python", "/usr/bin/python3.11", "--prefix", str(top / "opt"), "--env-file", str(env_file),
                      "--user", "nobody", "--no-systemd", script=script,
                      env={"PATH": f"{shims}:/usr/sbin:/usr/bin:/sbin:/bin", "PIP_NO_INDEX": "1", **secrets})  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        argv = log.read_text()
        assert "runuser -u nobody" in argv  # the log caught the commands
        for value in secrets.values():
            assert value not in argv and value not in out.stdout
        # Values read back literally, by a shell (`. agent.env`) as by systemd; files private.
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        read = subprocess.run(["bash", "-c", f"set -a; . {env_file}; env"], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin"}).stdout  # fmt: skip
        for name in ("PREFECT_API_AUTH_STRING", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
            assert f"{name}={secrets[name]}\n" in read
        key = top / "etc" / "keys" / "cpu-host-1.key"
        assert key.read_text().strip() == secrets["GREENPIPE_AGENT_KEY"] and stat.S_IMODE(key.stat().st_mode) == 0o600
        # Code owned by root, not by the tarball's uid; the venv and what pip put in it by the account.
        assert (top / "opt" / "src" / "pyproject.toml").stat().st_uid == 0
        nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
        dist = next((top / "opt" / "venv" / "lib").glob("python3.11/site-packages/greenpipe-0.dist-info"))
        assert (top / "opt" / "venv" / "bin" / "python").lstat().st_uid == nobody and dist.stat().st_uid == nobody
        assert f"GREENPIPE_AGENT_KEY_FILE={key}" in out.stdout
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_unit_is_hardened():
    unit = (AGENT / "greenpipe-agent@.service").read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "ReadWritePaths=/var/lib/greenpipe-agent/%i", "CapabilityBoundingSet=\n", "User=greenpipe",
                 "LoadCredential=agent.key:/etc/greenpipe/keys/%i.key"):  # fmt: skip
        assert line in unit, line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (package systemd)")
def test_unit_exposure_stays_low(tmp_path):
    """`systemd-analyze security` scores the installed unit at most 4.0 ("OK"); docs/SECURITY.md gives the figure."""
    unit = (AGENT / "greenpipe-agent@.service").read_text()
    unit = unit.replace("/opt/greenpipe-agent/venv/bin/prefect", str(Path(sys.executable).parent / "prefect"))
    (tmp_path / "greenpipe-agent@host-1.service").write_text(unit)
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=40",
                          "greenpipe-agent@host-1.service"], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert "Overall exposure level for greenpipe-agent@host-1.service: 3." in out.stdout
