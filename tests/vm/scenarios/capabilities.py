"""Scenario 1: the capability probe, through ``remediator status --json``, on the VM's kernel.

A memory-enabled child cgroup exists while the probe runs, so memory.reclaim is
looked for rather than inferred from the kernel version. Next to the probe's
answer the report holds what the guest sees for itself (the mount type of
/sys/fs/cgroup, the root's controllers, whether the child has memory.reclaim,
whether /proc/pressure/memory exists), for the host to compare.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Dict

from tests.vm.guest import lib

NAME = "capabilities"
CHILD = "vmt-caps"
EMPTY_POLICIES = Path("/tmp/vmt-no-policies")


def mount_type(mount_point: str) -> str:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == mount_point:
            return fields[2]
    return ""


def main() -> int:
    lib.in_vm_or_die()
    report: Dict[str, Any] = {"error": None}
    try:
        lib.make_cgroup(CHILD)
        EMPTY_POLICIES.mkdir(parents=True, exist_ok=True)
        report["guest_sees"] = {
            "cgroup_fs_type": mount_type(str(lib.CGROUP_ROOT)),
            "root_controllers": (lib.CGROUP_ROOT / "cgroup.controllers").read_text().split(),
            "child_has_memory_reclaim": (lib.cgroup_dir(CHILD) / "memory.reclaim").exists(),
            "proc_pressure_memory_exists": Path("/proc/pressure/memory").exists(),
        }
        status = subprocess.run(
            [sys.executable, "-m", "remediator", "--policies", str(EMPTY_POLICIES), "status", "--json"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        report["status_exit_code"] = status.returncode
        report["status_stderr"] = status.stderr
        report["status"] = json.loads(status.stdout)
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        lib.remove_cgroup(CHILD)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
