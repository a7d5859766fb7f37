"""Report the guest's cgroup2/PSI layout and the harness's promises about the guest."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Union

CGROUP_ROOT = Path("/sys/fs/cgroup")
CHILD = CGROUP_ROOT / "vm-probe-layout"

Report = Dict[str, Union[str, bool, int, Dict[str, str], None]]


def _mount_type(mount_point: str) -> Optional[str]:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == mount_point:
            return fields[2]
    return None


def _write_error(path: Path, text: str) -> Optional[str]:
    """None if the write worked, else the errno name."""
    try:
        path.write_text(text)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return None


def main(out_file: str) -> None:
    CHILD.mkdir(exist_ok=True)
    # Something for memory.reclaim to take: page cache charged to this process's cgroup.
    Path("/tmp/reclaim-me").write_bytes(b"\0" * (4 << 20))
    report: Report = {
        "kernel": os.uname().release,
        "cgroup_fs": _mount_type("/sys/fs/cgroup"),
        "controllers": (CGROUP_ROOT / "cgroup.controllers").read_text().strip(),
        "subtree_control": (CGROUP_ROOT / "cgroup.subtree_control").read_text().strip(),
        "proc_pressure_memory": Path("/proc/pressure/memory").read_text(),
        "child_has_memory_reclaim": (CHILD / "memory.reclaim").exists(),
        "child_has_memory_pressure": (CHILD / "memory.pressure").exists(),
        "reclaim_write_error": _write_error(CHILD / "memory.reclaim", "1M"),
        "root_write_error": _write_error(Path("/usr/vm-probe-must-fail"), "x"),
        "swap_devices": len(Path("/proc/swaps").read_text().splitlines()) - 1,
        "environment": {
            key: os.environ.get(key, "") for key in ("HOME", "PYTHONDONTWRITEBYTECODE", "VM_OUT")
        },
        "cwd": os.getcwd(),
    }
    CHILD.rmdir()
    Path(out_file).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
