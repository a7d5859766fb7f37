"""A fleet of cgroups under the VM's cgroup2 root, each with one small resident process.

The processes are busybox's static ``sleep``, started from one busybox shell
loop and moved into their cgroups: ~11 ms each under TCG against ~110 ms for a
Python Popen of coreutils' dynamically linked sleep (measured), which matters
at 2000 cgroups. Each costs about 100 KiB of memory.current.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import List, Sequence

from tests.vm.guest import lib

BUSYBOX = "/bin/busybox"
SLEEP_SEC = "1000000"
# One shell per this many processes: a command line stays well under ARG_MAX.
_SPAWN_BATCH = 500


def start_sleepers(cgroup_dirs: Sequence[Path]) -> None:
    """One busybox sleep per directory, moved into it (cgroup.procs) before the next starts."""
    for start in range(0, len(cgroup_dirs), _SPAWN_BATCH):
        batch = " ".join(str(d) for d in cgroup_dirs[start : start + _SPAWN_BATCH])
        script = f"for d in {batch}; do {BUSYBOX} sleep {SLEEP_SEC} & echo $! > $d/cgroup.procs; done"
        # The shell exits at once; the sleepers are orphaned (reparented to init) and stay.
        subprocess.run([BUSYBOX, "sh", "-c", script], check=True)


def create(parent: str, names: Sequence[str], *, with_process: bool = True) -> List[Path]:
    """Create ``parent/<name>`` for every name (parent with the memory controller for its children)."""
    lib.make_cgroup(f"{parent}/{names[0]}") if names else lib.make_cgroup(parent)
    dirs = [lib.cgroup_dir(f"{parent}/{name}") for name in names]
    for d in dirs:
        d.mkdir(exist_ok=True)
    if with_process:
        start_sleepers(dirs)
    return dirs


def numbered(prefix: str, count: int, start: int = 0) -> List[str]:
    return [f"{prefix}{i:04d}" for i in range(start, start + count)]


def remove(parent: str, names: Sequence[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            lib.remove_cgroup(f"{parent}/{name}")
