"""SIGHUP 100 times in a second: the daemon reloads (coalescing the burst), keeps watching, does not
spin afterwards, and stops cleanly.

A cgroup is watched before the burst; one created after it must still be
picked up (the rescan runs every second), the idle CPU after the burst is
measured next to the idle CPU before it, and SIGTERM must end the daemon with
exit code 0.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import for_report, of_type

NAME = "sighup_burst"
WORKDIR = Path("/tmp") / NAME
PARENT = "vmt-hup"
BEFORE = f"{PARENT}/before"
AFTER = f"{PARENT}/after"
SIGNALS = 100
BURST_SEC = 1.0
IDLE_SEC = 3.0
WAIT_SEC = 60.0
POLICY_ACTIONS = "  - kind: reclaim\n    fraction: 0.5\n"


def idle_cpu(daemon: lib.Daemon, seconds: float) -> float:
    cpu = daemon.cpu_seconds()
    time.sleep(seconds)
    return round(daemon.cpu_seconds() - cpu, 3)


def main() -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"error": None}
    daemon: Optional[lib.Daemon] = None
    policy = lib.policy_yaml([f"{PARENT}/*"], POLICY_ACTIONS, pressure="some", window_ms=2000)
    try:
        lib.make_cgroup(BEFORE)
        daemon = lib.Daemon(WORKDIR, {"hup": policy}, settings={"rescan_interval_sec": 1})
        daemon.start()
        daemon.wait_for(of_type(RecordType.WATCH_STARTED, BEFORE), WAIT_SEC)
        report["idle_cpu_before_sec"] = idle_cpu(daemon, IDLE_SEC)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        burst_start = time.monotonic()
        sent = 0
        for i in range(SIGNALS):
            os.kill(pid, signal.SIGHUP)
            sent += 1
            time.sleep(max(0.0, burst_start + (i + 1) * BURST_SEC / SIGNALS - time.monotonic()))
        report["signals_sent"] = sent
        report["burst_sec"] = round(time.monotonic() - burst_start, 3)
        # The last reload may still be running; let it finish, then look.
        time.sleep(2.0)
        report["running_after_burst"] = daemon.proc.poll() is None
        report["reloaded_records"] = len(daemon.find(of_type(RecordType.DAEMON_RELOADED)))
        report["rejected_records"] = len(daemon.find(of_type(RecordType.POLICY_REJECTED)))
        daemon.wait_notification("(drain the socket)", 0.5)
        report["reloading_notifications"] = sum("RELOADING=1" in n for n in daemon.notifications)
        report["idle_cpu_after_sec"] = idle_cpu(daemon, IDLE_SEC)
        lib.make_cgroup(AFTER)
        report["new_cgroup_watched"] = (
            daemon.wait_for(of_type(RecordType.WATCH_STARTED, AFTER), WAIT_SEC) is not None
        )
        report["still_watching_before"] = not daemon.find(of_type(RecordType.WATCH_ENDED, BEFORE))
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if daemon is not None:
            report["exit_code"] = daemon.stop()
            records = for_report(daemon, started)
            report["stopping_recorded"] = any(r["RECORD_TYPE"] == "DAEMON_STOPPING" for r in records)
            report["not_json_lines"] = [r["MESSAGE"] for r in records if r.get("NOT_JSON")][:20]
            report["records_tail"] = records[-30:]
        lib.remove_cgroup(PARENT)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
