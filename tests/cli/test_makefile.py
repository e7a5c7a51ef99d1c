"""``make PYTHON=python3.12 install`` builds the venv with that Python, also over a venv
another version made (README promises 3.11 or 3.12). Stand-in interpreters keep the test
off the network: they answer the version question, "create" a venv of stand-ins, and
log what they were asked to do."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

STAND_IN = """#!/bin/sh
# python{version} stand-in
if [ "$1" = "-c" ]; then echo {version}; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
  printf '#!/bin/sh\\necho "pip $*" >> "$MAKE_LOG"\\n' > "$3/bin/pip" && chmod +x "$3/bin/pip"
  echo "venv by python{version}" >> "$MAKE_LOG"
fi
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for version in ("3.11", "3.12"):
        stand_in = tmp_path / f"python{version}"
        stand_in.write_text(STAND_IN.format(version=version))
        stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def make_install(project: Path, python: str) -> list[str]:
    """The log lines this ``make PYTHON=... install`` added."""
    log = project / "make.log"
    before = log.read_text().splitlines() if log.exists() else []
    subprocess.run(
        ["make", f"PYTHON={project / python}", "install"],
        cwd=project,
        env=os.environ | {"MAKE_LOG": str(log)},
        check=True,
        capture_output=True,
    )
    return log.read_text().splitlines()[len(before) :]


def test_make_install_uses_the_python_given(project: Path) -> None:
    assert make_install(project, "python3.12") == [
        "venv by python3.12",
        "pip install --quiet --upgrade pip",
        "pip install --quiet -e .[dev]",
    ]
    assert make_install(project, "python3.12") == []  # up to date: nothing again


def test_a_venv_of_another_python_is_rebuilt(project: Path) -> None:
    assert make_install(project, "python3.11")[0] == "venv by python3.11"
    assert make_install(project, "python3.12")[0] == "venv by python3.12"
    version = subprocess.run(
        [project / ".venv" / "bin" / "python", "-c", "version"], capture_output=True, text=True
    )
    assert version.stdout.strip() == "3.12"


def test_a_missing_python_is_named(project: Path) -> None:
    failed = subprocess.run(
        ["make", "PYTHON=python2.99-nowhere", "install"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0
    assert "python2.99-nowhere not found" in failed.stdout + failed.stderr
