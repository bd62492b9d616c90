"""Shared fixtures: a temporary copy of the repository for real `dvc repro` runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Small thread pools: CI has 2 cores and tests run alongside their own worker processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def run(cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {})}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The tracked project files in a fresh git + DVC repo, as a clone would have them."""
    return copy_repo(tmp_path / "repo")


def copy_repo(dest: Path) -> Path:
    """Copy the project's tracked (and untracked, not ignored) files to dest and commit them there."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest
