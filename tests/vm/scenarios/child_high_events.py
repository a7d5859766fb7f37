"""Scenario 4b: a child's own memory.high breaches, after the daemon clamped its parent's memory.high.

``vmt-childhigh/app`` comes under mild pressure from a ``thrash`` child (page
cache read in a loop above the child's memory.max), started a few seconds
after the daemon's baseline read so that the stall rate the daemon measures at
its write is low, and the daemon sets the app's memory.high. The thrashing
stops; a ``squeezed`` child starts allocating far above *its own* memory.high:
the stall rises and the child's ``high`` events go up, and memory.events is
hierarchical, so they show in the app's counter too. The app's own memory.high
throttles nothing (its usage stays far below it; its memory.events.local
``high`` stays 0), so there is nothing to back off from.

Usage: ``python -m tests.vm.scenarios.child_high_events DEVICE`` (an ext4 drive holding DISK_FILES_MIB).
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
from tests.vm.scenarios.daemon_records import for_report, of_type

NAME = "child_high_events"
# Its own folder: scenarios may share a boot, and each daemon must start without a state file.
WORKDIR = Path("/tmp") / NAME
APP = "vmt-childhigh/app"
THRASH = f"{APP}/thrash"
SQUEEZED = f"{APP}/squeezed"
MEMORY_MAX = 256 << 20
FRACTION = 0.7
THRASH_FILE = "thrash-childhigh.bin"
DISK_FILES_MIB = {THRASH_FILE: 32}
THRASH_MEMORY_MAX = str(16 << 20)
SQUEEZE_HIGH = str(16 << 20)
SQUEEZE_MIB = 64
VERIFY_SEC = 2
# Between the daemon's baseline read and the first stall: it dilutes the stall rate of the write.
QUIET_BEFORE_PRESSURE_SEC = 3.0
# How long the squeezed child runs once its first high event is seen: several windows and re-checks.
WATCH_AFTER_SQUEEZE_SEC = 8.0
DISK_MOUNT = Path("/tmp/vmt-disk")
WAIT_SEC = 60.0

POLICY_ACTIONS = f"  - kind: memory_high\n    fraction: {FRACTION}\n    cooldown_sec: 600\n"


def events(cgroup: str, local: bool) -> Dict[str, int]:
    text = lib.read(cgroup, "memory.events.local" if local else "memory.events")
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def main(device: str) -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"error": None}
    daemon: Optional[lib.Daemon] = None
    try:
        lib.mount_drive(device, DISK_MOUNT)
        lib.make_cgroup(APP, memory_max=str(MEMORY_MAX))
        lib.make_cgroup(THRASH, memory_max=THRASH_MEMORY_MAX)
        lib.make_cgroup(SQUEEZED, memory_high=SQUEEZE_HIGH)
        policy = lib.policy_yaml(
            [APP],
            POLICY_ACTIONS,
            pressure="some",
            stall_ms=50,
            window_ms=1000,
            verify_sec=VERIFY_SEC,
            calm_sec=600,
        )
        daemon = lib.Daemon(WORKDIR, {"childhigh": policy}, settings={"rescan_interval_sec": 300})
        daemon.start()
        daemon.wait_for(of_type(RecordType.WATCH_STARTED, APP), WAIT_SEC)
        time.sleep(QUIET_BEFORE_PRESSURE_SEC)
        lib.read_file_in_loop(THRASH, DISK_MOUNT / THRASH_FILE)
        clamped = daemon.wait_for(of_type(RecordType.ACTION_APPLIED, APP), WAIT_SEC)
        lib.kill_cgroup(THRASH)
        report["clamped_to"] = clamped.get("REMEDIATOR_AFTER") if clamped else None
        report["events_at_clamp"] = events(APP, local=False)
        report["events_local_at_clamp"] = events(APP, local=True)

        squeezer = lib.anon_hog(SQUEEZED, SQUEEZE_MIB)
        peak_current = 0
        deadline = time.monotonic() + WAIT_SEC
        squeezing = False
        backed_off = of_type(RecordType.BACKED_OFF, APP)
        while time.monotonic() < deadline and not daemon.find(backed_off):
            peak_current = max(peak_current, int(lib.read(APP, "memory.current")))
            if not squeezing and events(SQUEEZED, local=True)["high"] > 0:
                # The interpreter may take seconds to start under TCG: count from the first breach.
                squeezing = True
                deadline = time.monotonic() + WATCH_AFTER_SQUEEZE_SEC
            time.sleep(0.1)
        report["squeezed"] = squeezing
        report["peak_memory_current_after_clamp"] = peak_current
        report["events_after"] = events(APP, local=False)
        report["events_local_after"] = events(APP, local=True)
        report["squeezed_events_local_after"] = events(SQUEEZED, local=True)
        report["memory_high_after"] = lib.read(APP, "memory.high")
        squeezer.kill()
        squeezer.wait()
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if daemon is not None:
            report["daemon_exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
        lib.remove_cgroup("vmt-childhigh")
        # The readers went with their cgroups: unmount for the next scenario of the boot.
        subprocess.run(["umount", str(DISK_MOUNT)], check=False)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
