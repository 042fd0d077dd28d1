"""Shared pytest fixture: a real, small tmpfs, to fill a disk for real.

``small_disk`` is a 1 MiB tmpfs mounted at ``tmp_path/disk`` for one test and unmounted after it; the
test is skipped where this process may not mount (no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs at tmp_path/disk (needs the right to mount; skipped where there is none)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)
