"""Scenario 2: a PSI trigger armed by the daemon's watcher fires under real pressure.

A cgroup's memory.high is set far below an anonymous allocation; with no swap
the kernel can only throttle the allocating task, which is a ``full`` stall (it
is the cgroup's only task). The guest notes the moment the workload crosses
memory.high (memory.events ``high`` leaves 0: the kernel counts the first
over-high reclaim) and the moment the daemon's PRESSURE_CONFIRMED record
arrives on its stderr; the host asserts on the difference.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import for_report, of_type

NAME = "trigger_fires"
# Its own folder: scenarios may share a boot, and each daemon must start without a state file.
WORKDIR = Path("/tmp") / NAME
CGROUP = "vmt-trigger"
MEMORY_HIGH = 16 << 20
ALLOCATION_MIB = 128
WINDOW_MS = 1000
STALL_MS = 100
# How often the guest looks at memory.events: the resolution of the crossing time.
CROSSING_POLL_SEC = 0.005
WAIT_SEC = 20.0


def wait_for_crossing(deadline: float) -> Optional[float]:
    """The monotonic time at which memory.events ``high`` was first seen above 0."""
    while time.monotonic() < deadline:
        if lib.memory_events(CGROUP)["high"] > 0:
            return time.monotonic()
        time.sleep(CROSSING_POLL_SEC)
    return None


def main() -> None:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"window_sec": WINDOW_MS / 1000, "error": None}
    daemon: Optional[lib.Daemon] = None
    try:
        lib.make_cgroup(CGROUP, memory_high=str(MEMORY_HIGH))
        policy = lib.policy_yaml(
            [CGROUP],
            # A rung that can only decline (no page cache here): the test is about the trigger.
            "  - kind: reclaim\n    min_bytes: 1Gi\n",
            pressure="full",
            stall_ms=STALL_MS,
            window_ms=WINDOW_MS,
        )
        daemon = lib.Daemon(WORKDIR, {"trigger": policy}, settings={"rescan_interval_sec": 300})
        daemon.start()
        armed = daemon.wait_for(of_type(RecordType.WATCH_STARTED, CGROUP), WAIT_SEC)
        report["watch_mode"] = armed.get("REMEDIATOR_RESULT") if armed else None

        hog = lib.anon_hog(CGROUP, ALLOCATION_MIB)
        crossed_at = wait_for_crossing(time.monotonic() + WAIT_SEC)
        confirmed = daemon.wait_for(of_type(RecordType.PRESSURE_CONFIRMED, CGROUP), WAIT_SEC)
        report["crossed"] = crossed_at is not None
        report["confirmed"] = confirmed is not None
        if crossed_at is not None and confirmed is not None:
            report["latency_sec"] = round(float(confirmed["_ARRIVED"]) - crossed_at, 3)
        report["memory_events"] = lib.memory_events(CGROUP)
        report["pressure_totals_us"] = lib.cgroup_pressure_totals(CGROUP)
        hog.kill()
        hog.wait()
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if daemon is not None:
            report["daemon_exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
        lib.remove_cgroup(CGROUP)
        lib.write_report(NAME, report)


if __name__ == "__main__":
    main()
