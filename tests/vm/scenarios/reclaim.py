"""Scenario 3: the reclaim rung on real page cache, and its refusal on shmem.

Two parents, each the policy's target, each with two children:

- ``vmt-reclaim``: ``reader`` read a file from an ext4 drive after drop_caches,
  so its clean page cache is charged there; ``squeezed`` allocates anonymous
  memory far above its own memory.high, so the parent's memory.pressure (which
  counts its children's stalls) fires. The daemon should write memory.reclaim
  and ``file`` should fall by about what it reports as reclaimed.
- ``vmt-shmem``: ``filler`` wrote a tmpfs file (shmem: counted in ``file``, not
  reclaimable without swap), ``squeezed`` as above. The daemon should decline
  with a record instead of writing memory.reclaim.

Usage: ``python -m tests.vm.scenarios.reclaim DEVICE`` (an ext4 drive holding DISK_FILES_MIB).
"""

from __future__ import annotations

import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import Record, RecordPredicate, for_report, of_type

NAME = "reclaim"
# Its own folder: scenarios may share a boot, and each daemon must start without a state file.
WORKDIR = Path("/tmp") / NAME
CACHE_PARENT = "vmt-reclaim"
SHMEM_PARENT = "vmt-shmem"
CACHE_FILE = "cache.bin"
DISK_FILES_MIB = {CACHE_FILE: 96}
DISK_MOUNT = Path("/tmp/vmt-disk")
TMPFS_MOUNT = Path("/tmp/vmt-tmpfs")
SHMEM_MIB = 64
SQUEEZE_HIGH = str(16 << 20)
SQUEEZE_MIB = 64
FRACTION = 0.5
WAIT_SEC = 60.0
STAT_KEYS = (
    "file",
    "shmem",
    "active_file",
    "inactive_file",
    "file_dirty",
    "file_writeback",
    "anon",
    "pgscan",
)

POLICY_ACTIONS = (
    f"  - kind: reclaim\n    fraction: {FRACTION}\n    min_bytes: 16Mi\n    timeout_sec: 10\n"
    "    cooldown_sec: 600\n"
)


def stat_of(cgroup: str) -> Dict[str, int]:
    stat = lib.memory_stat(cgroup)
    return {key: stat.get(key, 0) for key in STAT_KEYS}


def reclaim_outcome(cgroup: str) -> RecordPredicate:
    """A record of the reclaim rung's result on ``cgroup``: applied, partial, declined or failed."""
    kinds = (RecordType.ACTION_APPLIED, RecordType.ACTION_DECLINED, RecordType.ACTION_FAILED)

    def matches(record: Record) -> bool:
        return record.get("REMEDIATOR_ACTION") == "reclaim" and any(
            of_type(kind, cgroup)(record) for kind in kinds
        )

    return matches


def main(device: str) -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"fraction": FRACTION, "error": None}
    daemon: Optional[lib.Daemon] = None
    hogs: List[subprocess.Popen[bytes]] = []
    try:
        lib.mount_drive(device, DISK_MOUNT)
        TMPFS_MOUNT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "vmt-tmpfs", str(TMPFS_MOUNT)], check=True)
        for parent in (CACHE_PARENT, SHMEM_PARENT):
            lib.make_cgroup(f"{parent}/squeezed", memory_high=SQUEEZE_HIGH)
        lib.make_cgroup(f"{CACHE_PARENT}/reader")
        lib.make_cgroup(f"{SHMEM_PARENT}/filler")
        lib.drop_caches()
        lib.read_file_into_cache(f"{CACHE_PARENT}/reader", DISK_MOUNT / CACHE_FILE)
        lib.tmpfs_fill(f"{SHMEM_PARENT}/filler", TMPFS_MOUNT, SHMEM_MIB)

        policy = lib.policy_yaml(
            [CACHE_PARENT, SHMEM_PARENT],
            POLICY_ACTIONS,
            pressure="some",
            window_ms=1000,
            verify_sec=60,
            calm_sec=600,
        )
        daemon = lib.Daemon(WORKDIR, {"reclaim": policy}, settings={"rescan_interval_sec": 300})
        daemon.start()
        for parent in (CACHE_PARENT, SHMEM_PARENT):
            daemon.wait_for(of_type(RecordType.WATCH_STARTED, parent), WAIT_SEC)
        report["before"] = {
            CACHE_PARENT: stat_of(CACHE_PARENT),
            SHMEM_PARENT: stat_of(SHMEM_PARENT),
            f"{SHMEM_PARENT}/filler": stat_of(f"{SHMEM_PARENT}/filler"),
        }
        hogs = [lib.anon_hog(f"{parent}/squeezed", SQUEEZE_MIB) for parent in (CACHE_PARENT, SHMEM_PARENT)]
        reclaimed = daemon.wait_for(reclaim_outcome(CACHE_PARENT), WAIT_SEC)
        report["cache_after"] = stat_of(CACHE_PARENT)
        declined = daemon.wait_for(reclaim_outcome(SHMEM_PARENT), WAIT_SEC)
        report["shmem_after"] = stat_of(SHMEM_PARENT)
        report["filler_after"] = stat_of(f"{SHMEM_PARENT}/filler")
        report["cache_outcome_seen"] = reclaimed is not None
        report["shmem_outcome_seen"] = declined is not None
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        if daemon is not None:
            report["daemon_exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
        for parent in (CACHE_PARENT, SHMEM_PARENT):
            lib.remove_cgroup(parent)
        # The readers went with their cgroups: unmount for the next scenario of the boot.
        subprocess.run(["umount", str(DISK_MOUNT)], check=False)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
