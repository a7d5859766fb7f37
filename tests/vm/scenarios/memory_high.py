"""Scenario 4: the memory_high rung on real cgroups: where it goes, the floor, the calm, other writers.

Three cgroups are the policy's targets, each with memory.max set and memory.high
unset. Pressure comes from a ``thrash`` child that reads a file larger than its
own memory.max in a loop (reclaim at the child's limit is memory stall, and a
parent's memory.pressure counts its children's). Not from a child squeezed
under its own memory.high: memory.events is hierarchical, so the child's
``high`` events would show in the target's counter, which the daemon reads as
"our memory.high throttles it" (see the report of issue 4's tests).

- ``vmt-high/app``: the daemon sets memory.high to FRACTION x memory.max
  (page-aligned down), and puts "max" back once the pressure has been calm for
  CALM_SEC (the thrashing stops after the write).
- ``vmt-floor/app``: a ``hold`` child keeps anonymous memory that no reclaim can
  take (no swap), so unreclaimable memory + floor_margin_bytes is above
  memory.max: the daemon declines and memory.high stays "max".
- ``vmt-writer/app``: like the first, but after the daemon's write this script,
  as a second writer, sets memory.high itself: the daemon stands back and the
  other writer's value is still there after the calm period.

Usage: ``python -m tests.vm.scenarios.memory_high DEVICE`` (an ext4 drive holding DISK_FILES_MIB).
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
from tests.vm.scenarios.daemon_records import RecordPredicate, for_report, of_type

NAME = "memory_high"
# Its own folder: scenarios may share a boot, and each daemon must start without a state file.
WORKDIR = Path("/tmp") / NAME
SET_HERE = "vmt-high/app"
NO_ROOM = "vmt-floor/app"
OTHER_WRITER = "vmt-writer/app"
TARGETS = (SET_HERE, NO_ROOM, OTHER_WRITER)
MEMORY_MAX = {SET_HERE: 256 << 20, NO_ROOM: 192 << 20, OTHER_WRITER: 256 << 20}
# Each thrashing child reads its own file, larger than the child's memory.max.
THRASH_FILES = {name: f"thrash-{index}.bin" for index, name in enumerate(TARGETS)}
DISK_FILES_MIB = dict.fromkeys(THRASH_FILES.values(), 32)
THRASH_MEMORY_MAX = str(16 << 20)
# Kept by NO_ROOM's "hold" child: with the 64 MiB margin (and the interpreter's own few MiB)
# the floor is above NO_ROOM's memory.max of 192 MiB whatever its thrashing child does.
HOLD_MIB = 136
FRACTION = 0.7
FLOOR_MARGIN = 64 << 20
OTHER_WRITERS_VALUE = 240 << 20
# Thrashing under TCG stalls 8-17 % of the time (measured): a 5 % threshold fires reliably.
STALL_MS = 50
WINDOW_MS = 1000
VERIFY_SEC = 2
CALM_SEC = 4
DISK_MOUNT = Path("/tmp/vmt-disk")
WAIT_SEC = 60.0

POLICY_ACTIONS = (
    f"  - kind: memory_high\n    relative_to: max\n    fraction: {FRACTION}\n"
    f"    floor_margin_bytes: {FLOOR_MARGIN}\n    cooldown_sec: 600\n"
)


def memory_high_record(record_type: RecordType, cgroup: str) -> RecordPredicate:
    by_type = of_type(record_type, cgroup)
    return lambda record: by_type(record) and record.get("REMEDIATOR_ACTION") == "memory_high"


def main(device: str) -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"error": None}
    seen: Dict[str, Any] = {}
    report["memory_high_seen"] = seen
    daemon: Optional[lib.Daemon] = None
    holders: List[subprocess.Popen[bytes]] = []
    try:
        lib.mount_drive(device, DISK_MOUNT)
        for name in TARGETS:
            lib.make_cgroup(name, memory_max=str(MEMORY_MAX[name]))
            lib.make_cgroup(f"{name}/thrash", memory_max=THRASH_MEMORY_MAX)
        lib.make_cgroup(f"{NO_ROOM}/hold")
        hold = lib.anon_hog(f"{NO_ROOM}/hold", HOLD_MIB)
        holders.append(hold)
        assert hold.stdout is not None
        hold.stdout.readline()  # "allocated": the unreclaimable part is in place before any pressure
        report["initial_memory_high"] = {name: lib.read(name, "memory.high") for name in TARGETS}

        policy = lib.policy_yaml(
            list(TARGETS),
            POLICY_ACTIONS,
            pressure="some",
            stall_ms=STALL_MS,
            window_ms=WINDOW_MS,
            verify_sec=VERIFY_SEC,
            calm_sec=CALM_SEC,
        )
        daemon = lib.Daemon(WORKDIR, {"high": policy}, settings={"rescan_interval_sec": 300})
        daemon.start()
        for name in TARGETS:
            daemon.wait_for(of_type(RecordType.WATCH_STARTED, name), WAIT_SEC)
        for name in TARGETS:
            lib.read_file_in_loop(f"{name}/thrash", DISK_MOUNT / THRASH_FILES[name])

        # The other writer steps in as soon as the daemon has written.
        if daemon.wait_for(memory_high_record(RecordType.ACTION_APPLIED, OTHER_WRITER), WAIT_SEC):
            seen["other_writer_after_daemon_write"] = lib.read(OTHER_WRITER, "memory.high")
            lib.write(OTHER_WRITER, "memory.high", str(OTHER_WRITERS_VALUE))
        if daemon.wait_for(memory_high_record(RecordType.ACTION_APPLIED, SET_HERE), WAIT_SEC):
            seen["set_here_after_write"] = lib.read(SET_HERE, "memory.high")
        if daemon.wait_for(memory_high_record(RecordType.ACTION_DECLINED, NO_ROOM), WAIT_SEC):
            seen["no_room_after_decline"] = lib.read(NO_ROOM, "memory.high")
        daemon.wait_for(of_type(RecordType.STOOD_BACK, OTHER_WRITER), WAIT_SEC)

        # Pressure ends: the calm period starts.
        for name in TARGETS:
            lib.kill_cgroup(f"{name}/thrash")
        calm_from = time.monotonic()
        report["calm_started_sec"] = round(calm_from - started, 3)
        if daemon.wait_for(memory_high_record(RecordType.ROLLED_BACK, SET_HERE), WAIT_SEC):
            seen["set_here_after_restore"] = lib.read(SET_HERE, "memory.high")
        # The other writer's cgroup had the same calm period; give it a few re-checks more.
        time.sleep(max(0.0, calm_from + CALM_SEC + 2 * VERIFY_SEC - time.monotonic()))
        report["final_memory_high"] = {name: lib.read(name, "memory.high") for name in TARGETS}
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
        if daemon is not None:
            report["daemon_exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
        for top in sorted({name.split("/")[0] for name in TARGETS}):
            lib.remove_cgroup(top)
        # The readers went with their cgroups: unmount for the next scenario of the boot.
        subprocess.run(["umount", str(DISK_MOUNT)], check=False)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
