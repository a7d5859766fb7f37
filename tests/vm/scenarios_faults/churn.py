"""Cgroup churn on a real kernel: TOTAL creations and removals, LIVE at a time, under the daemon.

The policy selects every child of ``vmt-churn``; the rescan runs every second,
so most cgroups are watched (a real PSI trigger fd each) before they are
removed, and their removal arrives as POLLERR. Measured on the daemon
process: open fds and RSS before the churn, during it (every tenth of the
creations) and after every cgroup is gone; its idle CPU afterwards; the
WATCH_STARTED / WATCH_ENDED records; and, after a reload, the number of
targets its sd_notify STATUS says it watches (the one cgroup left).

Usage: ``python -m tests.vm.scenarios_faults.churn TOTAL LIVE``
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from remediator.records import RecordType
from tests.vm.guest import lib

NAME = "churn"
WORKDIR = Path("/tmp") / NAME
PARENT = "vmt-churn"
WAIT_SEC = 120.0
IDLE_SEC = 3.0
LIFETIME_SEC = 4.0
POLICY_ACTIONS = "  - kind: reclaim\n    fraction: 0.5\n"


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def counts(daemon: lib.Daemon) -> Dict[str, int]:
    started = ended = 0
    for record in daemon.snapshot():
        cgroup = str(record.get("REMEDIATOR_CGROUP", ""))
        if not cgroup.startswith(f"{PARENT}/"):
            continue
        if record.get("MESSAGE_ID") in (
            RecordType.WATCH_STARTED.message_id,
            RecordType.FALLBACK_SAMPLING.message_id,
        ):
            started += 1
        elif record.get("MESSAGE_ID") == RecordType.WATCH_ENDED.message_id:
            ended += 1
    return {"watch_started": started, "watch_ended": ended}


def main(total: int, live: int) -> int:
    lib.in_vm_or_die()
    report: Dict[str, Any] = {"error": None, "total": total, "live": live}
    samples: List[Dict[str, Any]] = []
    report["samples"] = samples
    daemon: Optional[lib.Daemon] = None
    policy = lib.policy_yaml([f"{PARENT}/*"], POLICY_ACTIONS, pressure="some", stall_ms=200, window_ms=2000)
    step = max(1, total // 10)
    try:
        lib.make_cgroup(f"{PARENT}/seed")
        daemon = lib.Daemon(WORKDIR, {"churn": policy}, settings={"rescan_interval_sec": 1})
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        daemon.wait_for(lambda r: counts(daemon)["watch_started"] >= 1, WAIT_SEC)
        time.sleep(1.0)
        report["before"] = {"fds": fds(pid), "rss_kib": rss_kib(pid)}
        parent = lib.cgroup_dir(PARENT)
        alive: List[Path] = []
        started = time.monotonic()
        # Paced so that each cgroup lives about LIFETIME_SEC: long enough for the rescan to
        # arm its trigger, so that most removals arrive as POLLERR on a watched fd.
        rate = live / LIFETIME_SEC
        for n in range(total):
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
            if len(alive) >= live:
                alive.pop(0).rmdir()
            child = parent / f"c{n}"
            child.mkdir()
            alive.append(child)
            if (n + 1) % step == 0:
                samples.append({"created": n + 1, "fds": fds(pid), "rss_kib": rss_kib(pid),
                                "sec": round(time.monotonic() - started, 2), **counts(daemon)})  # fmt: skip
        report["churn_sec"] = round(time.monotonic() - started, 2)
        report["peak_during"] = {
            "fds": max(s["fds"] for s in samples),
            "rss_kib": max(s["rss_kib"] for s in samples),
        }
        for child in alive:
            child.rmdir()
        # Until every trigger fd of a removed cgroup is closed (POLLERR, or the next rescan).
        baseline_fds = report["before"]["fds"]
        daemon.wait_for(lambda _r: fds(pid) <= baseline_fds, WAIT_SEC)
        time.sleep(2.0)
        report["after"] = {"fds": fds(pid), "rss_kib": rss_kib(pid), **counts(daemon)}
        # What the daemon itself says it watches: a reload ends with READY and a STATUS line.
        notified = len(daemon.notifications)
        daemon.signal(signal.SIGHUP)
        daemon.wait_notification("(drain the socket)", 5.0)
        report["status_after_reload"] = [n for n in daemon.notifications[notified:] if "STATUS=" in n][-1:]
        cpu = daemon.cpu_seconds()
        time.sleep(IDLE_SEC)
        report["idle_cpu_after_sec"] = round(daemon.cpu_seconds() - cpu, 3)
        report["running"] = daemon.proc.poll() is None
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if daemon is not None:
            report["exit_code"] = daemon.stop()
            report["final_counts"] = counts(daemon)
        lib.remove_cgroup(PARENT)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
