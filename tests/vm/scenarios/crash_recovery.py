"""Scenario 8: the daemon is killed with SIGKILL after it clamped memory.high; a restart restores it.

The first run sets memory.high of ``vmt-crash/app`` (pressure from its
``squeezed`` child) and is then killed with no chance to clean up: the value
stays clamped, and only the state file, written before the change, knows the
original. The pressure is then ended and a second run starts on the same state
file: it must put the original back (STATE_RECOVERED) before it is ready.
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

NAME = "crash_recovery"
APP = "vmt-crash/app"
SQUEEZED = f"{APP}/squeezed"
MEMORY_MAX = 256 << 20
FRACTION = 0.7
SQUEEZE_HIGH = str(16 << 20)
SQUEEZE_MIB = 64
# Its own folder: scenarios may share a boot, and each daemon must start without a state file.
WORKDIR = Path("/tmp") / NAME
WAIT_SEC = 60.0

POLICY_ACTIONS = f"  - kind: memory_high\n    fraction: {FRACTION}\n    cooldown_sec: 600\n"


def main() -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"error": None}
    policies = {
        "crash": lib.policy_yaml(
            [APP], POLICY_ACTIONS, pressure="some", window_ms=1000, verify_sec=60, calm_sec=600
        )
    }
    first: Optional[lib.Daemon] = None
    second: Optional[lib.Daemon] = None
    squeezer: Optional[subprocess.Popen[bytes]] = None
    try:
        lib.make_cgroup(APP, memory_max=str(MEMORY_MAX))
        lib.make_cgroup(SQUEEZED, memory_high=SQUEEZE_HIGH)
        report["original_memory_high"] = lib.read(APP, "memory.high")

        first = lib.Daemon(WORKDIR, policies, settings={"rescan_interval_sec": 300})
        first.start()
        first.wait_for(of_type(RecordType.WATCH_STARTED, APP), WAIT_SEC)
        squeezer = lib.anon_hog(SQUEEZED, SQUEEZE_MIB)
        clamped = first.wait_for(of_type(RecordType.ACTION_APPLIED, APP), WAIT_SEC)
        report["clamped_to"] = clamped.get("REMEDIATOR_AFTER") if clamped else None
        report["state_file_before_kill"] = first.state_file.read_text() if first.state_file.exists() else None
        first.kill9()
        report["first_records"] = for_report(first, started)
        report["memory_high_after_kill"] = lib.read(APP, "memory.high")

        # No more pressure: what the second run does at start-up is recovery, not a new clamp.
        squeezer.kill()
        squeezer.wait()
        squeezer = None

        second = lib.Daemon(WORKDIR, policies, settings={"rescan_interval_sec": 300})
        second.start()
        report["memory_high_after_restart"] = lib.read(APP, "memory.high")
        report["state_file_after_restart"] = (
            second.state_file.read_text() if second.state_file.exists() else None
        )
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if squeezer is not None:
            squeezer.kill()
            squeezer.wait()
        if first is not None and first.proc is not None and first.proc.poll() is None:
            first.kill9()
        if second is not None:
            report["second_exit_code"] = second.stop()
            report["second_records"] = for_report(second, started)
        lib.remove_cgroup("vmt-crash")
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
