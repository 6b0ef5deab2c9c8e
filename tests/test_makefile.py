"""`make prometheus-bin`, which `make test` runs first: install only what is needed, and only as root.

The target runs with a PATH holding only stand-ins: ``id`` says who we are, ``apt-get`` records
how it was called. So both the root and the non-root branch are exercised on any machine, and
nothing is really installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.proxy_process import REPO

INSTALL = "apt-get install -y -qq --no-install-recommends prometheus"


def make_binary() -> str:
    """GNU make (the project's two commands need it anyway)."""
    found = shutil.which("make")
    if found is None:
        pytest.fail("make is not installed", pytrace=False)
    return found


def stand_ins(tmp_path: Path, uid: int) -> Path:
    """A PATH directory with ``id`` printing ``uid`` and an ``apt-get`` that logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "id": f'#!/bin/sh\n[ "$1" = "-u" ] && echo {uid}\n',
        "apt-get": f'#!/bin/sh\necho "apt-get $*" >> {tmp_path / "apt.log"}\n',
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def run_target(tmp_path: Path, uid: int, **env: str) -> subprocess.CompletedProcess[str]:
    """`make prometheus-bin` with only the stand-ins on PATH (so no real prometheus is found)."""
    return subprocess.run(
        [make_binary(), "-s", "-f", str(REPO / "Makefile"), "prometheus-bin"],
        cwd=tmp_path,
        env={"PATH": str(stand_ins(tmp_path, uid)), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def apt_calls(tmp_path: Path) -> list[str]:
    """Every apt-get call the target made."""
    log = tmp_path / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


def test_as_root_it_installs_prometheus_without_recommends(tmp_path: Path) -> None:
    """Root, no prometheus: `apt-get update`, then install with --no-install-recommends (not 35 packages)."""
    result = run_target(tmp_path, uid=0)
    assert result.returncode == 0, result.stderr
    assert apt_calls(tmp_path) == ["apt-get update -qq", INSTALL]


def test_as_a_user_it_prints_the_command_to_run_and_fails(tmp_path: Path) -> None:
    """Not root: nothing is attempted; the exact sudo command and the override variables are printed."""
    result = run_target(tmp_path, uid=1000)
    assert result.returncode != 0
    assert apt_calls(tmp_path) == []
    assert f"sudo apt-get update && sudo {INSTALL}" in result.stderr
    assert "PROXY_TEST_PROMETHEUS=" in result.stderr
    assert "PROXY_TEST_PROMTOOL=" in result.stderr


def test_binaries_named_in_the_environment_are_used_as_they_are(tmp_path: Path) -> None:
    """PROXY_TEST_PROMETHEUS and PROXY_TEST_PROMTOOL name executables: nothing installed, even for a user."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("prometheus", "promtool"):
        (tools / name).write_text("#!/bin/sh\n")
        (tools / name).chmod(0o755)
    result = run_target(
        tmp_path,
        uid=1000,
        PROXY_TEST_PROMETHEUS=str(tools / "prometheus"),
        PROXY_TEST_PROMTOOL=str(tools / "promtool"),
    )
    assert result.returncode == 0, result.stderr
    assert apt_calls(tmp_path) == []


def test_a_named_binary_that_does_not_exist_is_an_error_not_an_install(tmp_path: Path) -> None:
    """A wrong PROXY_TEST_PROMETHEUS fails with its name, and root does not install over it."""
    result = run_target(tmp_path, uid=0, PROXY_TEST_PROMETHEUS=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert "not executable" in result.stderr
    assert str(tmp_path / "missing") in result.stderr
    assert apt_calls(tmp_path) == []
