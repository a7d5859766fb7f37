"""Scenario 5: a watched cgroup is removed (rmdir after its processes exit).

The kernel reports POLLERR (with POLLPRI) on the trigger fd of a removed
cgroup. The daemon must close and forget it (WATCH_ENDED, result "gone": the
periodic rescan that would also notice is set far beyond the test), and must
not spin on the dead fd: its CPU time and voluntary context switches over the
next seconds are measured, next to the same figures while idle before the
removal.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import for_report, of_type

NAME = "removed_cgroup"
# Its own folder: scenarios may share a boot, and each daemon must start without a state file.
WORKDIR = Path("/tmp") / NAME
CGROUP = "vmt-gone/app"
MEASURE_SEC = 3.0
WAIT_SEC = 60.0


def usage_over(daemon: lib.Daemon, seconds: float) -> Dict[str, float]:
    """The daemon's CPU seconds and voluntary context switches during ``seconds`` of wall time."""
    cpu, switches = daemon.cpu_seconds(), daemon.voluntary_switches()
    time.sleep(seconds)
    return {
        "cpu_sec": round(daemon.cpu_seconds() - cpu, 3),
        "voluntary_switches": daemon.voluntary_switches() - switches,
        "wall_sec": seconds,
    }


def main() -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"error": None}
    daemon: Optional[lib.Daemon] = None
    try:
        lib.make_cgroup(CGROUP)
        sleeper = lib.run_in(CGROUP, ["sleep", "3600"])
        policy = lib.policy_yaml([CGROUP], "  - kind: reclaim\n", pressure="some")
        daemon = lib.Daemon(WORKDIR, {"gone": policy}, settings={"rescan_interval_sec": 300})
        daemon.start()
        watched = daemon.wait_for(of_type(RecordType.WATCH_STARTED, CGROUP), WAIT_SEC)
        report["watch_mode"] = watched.get("REMEDIATOR_RESULT") if watched else None
        report["idle_before_removal"] = usage_over(daemon, MEASURE_SEC)

        sleeper.kill()
        sleeper.wait()
        removed_at = time.monotonic()
        lib.remove_cgroup("vmt-gone")
        report["removed_at_sec"] = round(removed_at - started, 3)
        ended = daemon.wait_for(of_type(RecordType.WATCH_ENDED, CGROUP), WAIT_SEC)
        if ended is not None:
            report["watch_ended_after_sec"] = round(float(ended["_ARRIVED"]) - removed_at, 3)
        report["after_removal"] = usage_over(daemon, MEASURE_SEC)
        report["daemon_alive"] = daemon.proc is not None and daemon.proc.poll() is None
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if daemon is not None:
            report["daemon_exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
        lib.remove_cgroup("vmt-gone")
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
