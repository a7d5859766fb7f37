"""The state directory full, then read-only, then writable again, under a running daemon.

What cannot be recorded cannot be undone: while the state file cannot be
written, the daemon must refuse to change memory.high (STATE_UNWRITABLE,
result "refused", ERRNO ENOSPC then EROFS), say so, and keep observing; once
the directory is writable again, the next attempt is applied; on SIGTERM the
original is back.

The state directory is a tiny tmpfs of its own (mode 0700, as systemd's
RuntimeDirectory= makes it): filled to the last byte for "full", remounted
read-only for "read-only". Pressure comes from a child squeezed under its own
memory.high (anonymous memory, no swap), as in the crash-recovery scenario.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import RecordPredicate, for_report, of_type

NAME = "state_dir"
WORKDIR = Path("/tmp") / NAME
STATE_DIR = WORKDIR / "run"
APP = "vmt-statedir/app"
SQUEEZED = f"{APP}/squeezed"
MEMORY_MAX = 256 << 20
WAIT_SEC = 90.0
POLICY_ACTIONS = "  - kind: memory_high\n    fraction: 0.7\n    cooldown_sec: 0\n    max_per_hour: 1000\n"


def refused(errno_name: str) -> RecordPredicate:
    by_type = of_type(RecordType.STATE_UNWRITABLE, APP)
    return lambda r: (
        by_type(r) and r.get("REMEDIATOR_RESULT") == "refused" and r.get("REMEDIATOR_ERRNO") == errno_name
    )


def applied(record: Dict[str, Any]) -> bool:
    return (
        of_type(RecordType.ACTION_APPLIED, APP)(record) and record.get("REMEDIATOR_ACTION") == "memory_high"
    )


def fill(directory: Path) -> int:
    """Write into ``directory`` until the file system is full; returns the bytes written."""
    written = 0
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                written += os.write(fd, b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written
    finally:
        os.close(fd)


def phase(daemon: lib.Daemon, name: str, predicate: RecordPredicate, started: float) -> Dict[str, Any]:
    """Wait for the phase's record; then what the kernel holds and whether the daemon still runs."""
    found = daemon.wait_for(predicate, WAIT_SEC)
    assert daemon.proc is not None
    return {
        "phase": name,
        "record_seen": found is not None,
        "record_message": found.get("MESSAGE") if found else None,
        "at_sec": round(float(found["_ARRIVED"]) - started, 3) if found else None,
        "memory_high": lib.read(APP, "memory.high"),
        "daemon_running": daemon.proc.poll() is None,
    }


def main() -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    report: Dict[str, Any] = {"error": None}
    phases: List[Dict[str, Any]] = []
    report["phases"] = phases
    daemon: Optional[lib.Daemon] = None
    squeezer: Optional[subprocess.Popen[bytes]] = None
    policy = lib.policy_yaml(
        [APP], POLICY_ACTIONS, pressure="some", window_ms=1000, verify_sec=2, calm_sec=600
    )
    try:
        lib.make_cgroup(APP, memory_max=str(MEMORY_MAX))
        lib.make_cgroup(SQUEEZED, memory_high=str(16 << 20))
        report["original_memory_high"] = lib.read(APP, "memory.high")
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "statedir", str(STATE_DIR)], check=True
        )
        report["filler_bytes"] = fill(STATE_DIR)

        daemon = lib.Daemon(WORKDIR, {"statedir": policy}, settings={"rescan_interval_sec": 300})
        daemon.start()
        daemon.wait_for(of_type(RecordType.WATCH_STARTED, APP), WAIT_SEC)
        squeezer = lib.anon_hog(SQUEEZED, 64)

        phases.append(phase(daemon, "full", refused("ENOSPC"), started))
        # It keeps observing and trying: a second refusal, not a silent stop.
        first = len(daemon.find(refused("ENOSPC")))
        daemon.wait_for(lambda r: len(daemon.find(refused("ENOSPC"))) > first, WAIT_SEC)
        phases[-1]["refusals"] = len(daemon.find(refused("ENOSPC")))

        (STATE_DIR / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(STATE_DIR)], check=True)
        phases.append(phase(daemon, "read-only", refused("EROFS"), started))

        subprocess.run(["mount", "-o", "remount,rw", str(STATE_DIR)], check=True)
        phases.append(phase(daemon, "writable again", applied, started))
        report["state_file_when_applied"] = (
            daemon.state_file.read_text() if daemon.state_file.exists() else None
        )

        squeezer.kill()
        squeezer.wait()
        squeezer = None
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if squeezer is not None:
            squeezer.kill()
            squeezer.wait()
        if daemon is not None:
            report["exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
        report["final_memory_high"] = lib.read(APP, "memory.high") if lib.cgroup_dir(APP).exists() else None
        lib.remove_cgroup("vmt-statedir")
        subprocess.run(["umount", str(STATE_DIR)], check=False)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
