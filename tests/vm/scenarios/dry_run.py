"""Scenario 7: dry-run against the real kernel changes no file.

The same set-up as an enforcing run would act on at every rung: ``vmt-dry/app``
(memory.max 256 MiB) holds clean page cache read from an ext4 drive (``reader``)
and stalls because its ``thrash`` child reads a file larger than its own
memory.max in a loop. The ladder is reclaim -> memory_high -> vfs_cache_pressure (the
node-wide rung allowed), with a short verify_sec so that every rung is reached.
In dry-run the records must say "would" and nothing may change: memory.high,
the cache memory.reclaim would have taken, every readable /proc/sys/vm value,
and no state file may appear.

Usage: ``python -m tests.vm.scenarios.dry_run DEVICE`` (an ext4 drive holding DISK_FILES_MIB).
"""

from __future__ import annotations

import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import Record, RecordPredicate, for_report, of_type

NAME = "dry_run"
# Its own folder: scenarios may share a boot, and each daemon must start without a state file.
WORKDIR = Path("/tmp") / NAME
APP = "vmt-dry/app"
READER = f"{APP}/reader"
THRASH = f"{APP}/thrash"
CACHE_FILE = "cache.bin"
THRASH_FILE = "thrash.bin"
DISK_FILES_MIB = {CACHE_FILE: 96, THRASH_FILE: 32}
DISK_MOUNT = Path("/tmp/vmt-disk")
PROC_SYS_VM = Path("/proc/sys/vm")
MEMORY_MAX = str(256 << 20)
THRASH_MEMORY_MAX = str(16 << 20)
RUNGS = ("reclaim", "memory_high", "vfs_cache_pressure")
WAIT_SEC = 60.0

POLICY_ACTIONS = (
    "  - kind: reclaim\n    fraction: 0.5\n    min_bytes: 16Mi\n    cooldown_sec: 600\n"
    "  - kind: memory_high\n    fraction: 0.7\n    cooldown_sec: 600\n"
    "  - kind: vfs_cache_pressure\n    value: 200\n    cooldown_sec: 600\n"
)


def proc_sys_vm_values() -> Dict[str, str]:
    """Every readable value under /proc/sys/vm (write-only ones are left out)."""
    values: Dict[str, str] = {}
    for path in sorted(PROC_SYS_VM.iterdir()):
        try:
            values[path.name] = path.read_text().strip()
        except OSError:
            continue
    return values


def would_record(action: str) -> RecordPredicate:
    applied = of_type(RecordType.ACTION_APPLIED, APP)

    def matches(record: Record) -> bool:
        return applied(record) and record.get("REMEDIATOR_ACTION") == action

    return matches


def main(device: str) -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"rungs": list(RUNGS), "error": None}
    daemon: Optional[lib.Daemon] = None
    try:
        lib.mount_drive(device, DISK_MOUNT)
        lib.make_cgroup(APP, memory_max=MEMORY_MAX)
        lib.make_cgroup(READER)
        lib.make_cgroup(THRASH, memory_max=THRASH_MEMORY_MAX)
        lib.drop_caches()
        lib.read_file_into_cache(READER, DISK_MOUNT / CACHE_FILE)

        policy = lib.policy_yaml(
            [APP], POLICY_ACTIONS, pressure="some", stall_ms=50, window_ms=1000, verify_sec=2, calm_sec=600
        )
        policy += "allow_node_wide: true\n"
        daemon = lib.Daemon(WORKDIR, {"dry": policy}, dry_run=True, settings={"rescan_interval_sec": 300})
        report["before"] = {
            "memory_high": lib.read(APP, "memory.high"),
            "reader_file": lib.memory_stat(READER)["file"],
            "proc_sys_vm": proc_sys_vm_values(),
        }
        report["state_file_existed_before_start"] = daemon.state_file.exists()
        daemon.start()
        daemon.wait_for(of_type(RecordType.WATCH_STARTED, APP), WAIT_SEC)
        lib.read_file_in_loop(THRASH, DISK_MOUNT / THRASH_FILE)
        report["would_seen"] = {
            rung: daemon.wait_for(would_record(rung), WAIT_SEC) is not None for rung in RUNGS
        }
        report["after"] = {
            "memory_high": lib.read(APP, "memory.high"),
            "reader_file": lib.memory_stat(READER)["file"],
            "proc_sys_vm": proc_sys_vm_values(),
        }
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if daemon is not None:
            report["daemon_exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
            # After the stop: not even the exit path may write one.
            report["state_dir_entries"] = sorted(
                str(path.relative_to(daemon.workdir)) for path in daemon.state_file.parent.glob("*")
            )
            report["state_file_exists"] = daemon.state_file.exists()
        report["memory_high_after_stop"] = (
            lib.read(APP, "memory.high") if lib.cgroup_dir(APP).exists() else None
        )
        lib.remove_cgroup("vmt-dry")
        # The readers went with their cgroups: unmount for the next scenario of the boot.
        subprocess.run(["umount", str(DISK_MOUNT)], check=False)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
