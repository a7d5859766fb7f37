"""Host tools the packaging tests need (dpkg-deb, lintian, rpm, rpmlint, systemd-analyze, busybox).

A missing tool is installed with apt when we are root (the CI machine is); otherwise the test is
skipped with the reason, except under CI (CI=true), where a skip would hide a missing install step, so
the test fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, NoReturn, Sequence

import pytest

# command -> the Debian package that brings it.
PACKAGE_OF: Dict[str, str] = {
    "dpkg-deb": "dpkg",
    "lintian": "lintian",
    "rpm": "rpm",
    "rpmlint": "rpmlint",
    "systemd-analyze": "systemd",
    "journalctl": "systemd",
    "busybox": "busybox-static",
    "groff": "groff-base",
}


class _AptState:
    # `apt-get update` at most once per test session.
    updated = False


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    if under_ci():
        pytest.fail(f"unavailable under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _apt_install(packages: Sequence[str]) -> str:
    """Install with apt; returns "" on success, else what went wrong."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    for attempt in range(2):
        completed = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if completed.returncode == 0:
            return ""
        if attempt == 0 and not _AptState.updated:
            # Package lists may be missing or stale on a fresh machine: refresh once, then retry.
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
            _AptState.updated = True
            continue
        return (completed.stderr or completed.stdout).strip().splitlines()[-1:][0]
    return "apt-get install failed"


def require_commands(*commands: str) -> None:
    """Make sure every command is on PATH (installing its package), or skip/fail with the reason."""
    missing = [command for command in commands if shutil.which(command) is None]
    if not missing:
        return
    packages = sorted({PACKAGE_OF[command] for command in missing})
    if os.geteuid() != 0:
        unavailable(f"{', '.join(missing)} not installed and not root (apt-get install {' '.join(packages)})")
    problem = _apt_install(packages)
    still_missing = [command for command in missing if shutil.which(command) is None]
    if still_missing:
        unavailable(f"cannot install {' '.join(packages)} for {', '.join(still_missing)}: {problem}")
