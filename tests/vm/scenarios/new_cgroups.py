"""Scenario 6: cgroups created after the daemon started are watched within rescan_interval_sec.

The policy selects ``vmt-new/*``; the parent exists at start-up, its children
are created one by one afterwards, at different points of the rescan cycle.
For each, the time from its mkdir to the daemon's WATCH_STARTED record is measured.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import for_report, of_type

NAME = "new_cgroups"
# Its own folder: scenarios may share a boot, and each daemon must start without a state file.
WORKDIR = Path("/tmp") / NAME
PARENT = "vmt-new"
RESCAN_INTERVAL_SEC = 2.0
# Pauses before each mkdir, after the previous cgroup was seen: different phases of the rescan cycle.
PAUSES_SEC = (0.0, 0.7, 1.4, 0.3)
WAIT_SEC = 30.0


def main() -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"rescan_interval_sec": RESCAN_INTERVAL_SEC, "error": None}
    daemon: Optional[lib.Daemon] = None
    try:
        lib.make_cgroup(PARENT)
        policy = lib.policy_yaml([f"{PARENT}/*"], "  - kind: reclaim\n", pressure="some")
        daemon = lib.Daemon(WORKDIR, {"new": policy}, settings={"rescan_interval_sec": RESCAN_INTERVAL_SEC})
        daemon.start()
        seen: List[Dict[str, Any]] = []
        report["cgroups"] = seen
        for index, pause in enumerate(PAUSES_SEC):
            time.sleep(pause)
            name = f"{PARENT}/late-{index}"
            created_at = time.monotonic()
            lib.make_cgroup(name)
            watched = daemon.wait_for(of_type(RecordType.WATCH_STARTED, name), WAIT_SEC)
            seen.append(
                {
                    "cgroup": name,
                    "watch_mode": watched.get("REMEDIATOR_RESULT") if watched else None,
                    "seconds_to_watch": round(float(watched["_ARRIVED"]) - created_at, 3)
                    if watched
                    else None,
                }
            )
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if daemon is not None:
            report["daemon_exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
        lib.remove_cgroup(PARENT)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
