"""The systemd unit: valid for systemd, sandboxed (exposure <= 3.0), and keeping what the daemon relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

from tests.packaging.conftest import REPO_ROOT, SUMMARY_LINES
from tests.packaging.host_tools import require_commands

UNIT = REPO_ROOT / "systemd" / "remediator.service"
SLICE = REPO_ROOT / "systemd" / "remediator.slice"
LAUNCHER = REPO_ROOT / "packaging" / "launcher" / "remediator"
HOST_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
MAX_EXPOSURE = 3.0


def directives(section: str) -> Dict[str, List[str]]:
    """key -> every value it has in [section] (comments and blank lines dropped)."""
    found: Dict[str, List[str]] = {}
    current = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    require_commands("systemd-analyze")
    # A root with the host's units (targets the unit orders against), the unit as installed, and the
    # launcher at /usr/bin/remediator: verify checks that ExecStart= and ExecReload= exist there.
    unit_dir = tmp_path / "usr" / "lib" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    # On a merged-/usr host both names are one directory: copy each real directory once.
    for host_dir in sorted({path.resolve() for path in HOST_UNIT_DIRS if path.is_dir()}):
        shutil.copytree(host_dir, unit_dir, symlinks=True, dirs_exist_ok=True)
    shutil.copy(UNIT, unit_dir / UNIT.name)
    shutil.copy(SLICE, unit_dir / SLICE.name)
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    shutil.copy(LAUNCHER, tmp_path / "usr" / "bin" / "remediator")
    completed = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}", "--man=no", UNIT.name, SLICE.name],
        capture_output=True,
        text=True,
        check=False,
    )
    # Unknown keys are only warnings for verify (exit 0): any output is a finding.
    assert completed.returncode == 0 and not completed.stderr.strip() and not completed.stdout.strip(), (
        completed.stdout + completed.stderr
    )


def test_unit_exposure_is_at_most_three() -> None:
    require_commands("systemd-analyze")
    completed = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=30", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for remediator\.service: ([0-9.]+)", completed.stdout)
    assert found, completed.stdout + completed.stderr
    exposure = float(found.group(1))
    SUMMARY_LINES.append(f"systemd-analyze security --offline=true remediator.service: exposure {exposure}")
    print(f"remediator.service exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, completed.stdout
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_unit_is_type_notify_with_watchdog_and_reloads_without_bin_kill() -> None:
    service = directives("Service")
    # notify-reload needs systemd 253; Debian 12, Ubuntu 22.04 and RHEL 9 have older ones.
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"], "the daemon pings the watchdog; without WatchdogSec= a hang goes unseen"
    assert service["ExecStart"] == ["/usr/bin/remediator run"]
    # Minimal systems have no /bin/kill: the reload goes through the launcher.
    assert service["ExecReload"] == ["/usr/bin/remediator reload --pid $MAINPID"]
    assert service["Restart"] == ["on-failure"]


def test_unit_keeps_write_access_to_cgroups_vm_sysctls_and_the_metrics_directory_only() -> None:
    service = directives("Service")
    assert service["ProtectSystem"] == ["strict"]
    writable = " ".join(service.get("ReadWritePaths", [])).split()
    # "-": node_exporter (and its textfile directory) is only recommended, not required.
    assert sorted(writable) == ["-/var/lib/prometheus/node-exporter", "/proc/sys/vm", "/sys/fs/cgroup"]
    assert service["RuntimeDirectory"] == ["remediator"], "the state file lives in /run/remediator"
    assert service["RuntimeDirectoryPreserve"] == ["yes"], (
        "crash recovery reads the state file after a restart"
    )


def test_unit_survives_the_pressure_it_treats() -> None:
    service = directives("Service")
    assert int(service["OOMScoreAdjust"][0]) <= -500
    assert service["ManagedOOMPreference"] == ["omit"]
    assert service["MemoryMin"] and service["MemoryLow"]


def test_memory_protection_is_also_on_the_parent_slice() -> None:
    # cgroup v2 bounds a child's effective memory.min/low by its parent's: system.slice has none.
    assert directives("Service")["Slice"] == ["remediator.slice"]
    slice_settings: Dict[str, List[str]] = {}
    current = ""
    for raw in SLICE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line
        elif line and not line.startswith("#") and current == "[Slice]":
            key, _, value = line.partition("=")
            slice_settings.setdefault(key, []).append(value)
    service = directives("Service")
    assert slice_settings["MemoryMin"] == service["MemoryMin"]
    assert slice_settings["MemoryLow"] == service["MemoryLow"]


def test_unit_needs_psi() -> None:
    assert directives("Unit")["ConditionPathExists"] == ["/proc/pressure/memory"]


def test_every_capability_the_unit_keeps_is_explained() -> None:
    text = UNIT.read_text()
    kept = directives("Service")["CapabilityBoundingSet"][0].split()
    assert kept == ["CAP_DAC_OVERRIDE", "CAP_SYS_RESOURCE"]
    comments = " ".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for capability in kept:
        assert f"{capability}:" in comments, f"{capability} is kept without a comment saying why"


def test_readmes_sandbox_table_says_what_the_unit_sets() -> None:
    # The table said "not `ProtectKernelTunables=`" while the unit set it (issue 12, item 18).
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("### What the unit's sandbox allows, and why", 1)[1].split("\n\n### ", 1)[0]
    service = directives("Service")
    checked = 0
    for row in table.splitlines():
        if not row.startswith("| ") or row.startswith(("| setting", "| ---")):
            continue
        cell = row.split(" | ")[0].lstrip("| ")
        for key, value in re.findall(r"`([A-Za-z]+)=([^`]*)`", cell):
            checked += 1
            if cell.startswith("not "):
                assert key not in service, f"README says not {key}=, the unit sets it"
            elif value:
                # A setting given on several lines (SystemCallFilter=) adds up.
                given = service.get(key, [])
                assert value in (*given, " ".join(given)), f"README: {key}={value}; unit: {given}"
            else:
                assert key in service, f"README names {key}=, the unit does not set it"
    assert checked >= 30
