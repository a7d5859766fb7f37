"""Scenario: the daemon in dry-run and ``remediator record`` side by side on a pressured service.

The seed in small: ``system.slice/vmt-seed.service`` (memory.max 128 MiB, so the shipped
``services-cache`` policy selects it) reads a 192 MiB file from an ext4 drive in a loop
(real, clean page cache reclaimed at the limit: full stall), for ``PRESSURE_SEC``, then
stops, so that the calm is recorded too. The daemon runs the SHIPPED services-cache
policy in dry-run; the recorder samples the service and the node every second, and writes
the events of the same PSI trigger the daemon arms, into ``$VM_OUT/record_replay.trace.gz``.
The host replays that trace with the same policy and compares the decisions with the
daemon's records (tests/vm/test_vm_replay.py); the same run made the committed fixture
tests/fixtures/traces/seed-dry-run.trace.gz (before record armed triggers).

Usage: ``python -m tests.vm.scenarios.record_replay DEVICE`` (an ext4 drive holding DISK_FILES_MIB).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import for_report, of_type

NAME = "record_replay"
WORKDIR = Path("/tmp") / NAME
APP = "system.slice/vmt-seed.service"
THRASH_FILE = "stream.bin"
DISK_FILES_MIB = {THRASH_FILE: 192}
DISK_MOUNT = Path("/tmp/vmt-record-disk")
MEMORY_MAX = str(128 << 20)
CALM_BEFORE_SEC = 3.0
PRESSURE_SEC = 14.0
CALM_AFTER_SEC = 5.0
RECORD_SEC = CALM_BEFORE_SEC + PRESSURE_SEC + CALM_AFTER_SEC
SHIPPED_POLICY = Path(__file__).resolve().parents[3] / "policies" / "services-cache.yaml"
TRACE_NAME = "record_replay.trace.gz"


def main(device: str) -> int:
    lib.in_vm_or_die()
    started = time.monotonic()
    out_dir = Path(os.environ.get("VM_OUT", "/out"))
    report: Dict[str, Any] = {"error": None, "cgroup": APP, "trace": TRACE_NAME}
    daemon: Optional[lib.Daemon] = None
    recorder: Optional[subprocess.Popen[bytes]] = None
    try:
        lib.mount_drive(device, DISK_MOUNT)
        lib.make_cgroup(APP, memory_max=MEMORY_MAX)
        lib.drop_caches()
        daemon = lib.Daemon(WORKDIR, {"services-cache": SHIPPED_POLICY.read_text()}, dry_run=True)
        daemon.start()
        daemon.wait_for(of_type(RecordType.WATCH_STARTED, APP), 60.0)
        recorder = subprocess.Popen(
            [sys.executable, "-m", "remediator", "--config", str(WORKDIR / "remediator.yaml"), "record",
             "--interval", "1", "--duration", str(RECORD_SEC), "-o", str(out_dir / TRACE_NAME), APP],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        # The recorder's first line comes once its header is written: the calm starts then, not at its fork
        # (a Python start takes seconds under emulation).
        assert recorder.stderr is not None
        report["recorder_started"] = recorder.stderr.readline().decode()
        time.sleep(CALM_BEFORE_SEC)
        lib.read_file_in_loop(APP, DISK_MOUNT / THRASH_FILE)
        time.sleep(PRESSURE_SEC)
        lib.kill_cgroup(APP)
        out, err = recorder.communicate(timeout=RECORD_SEC + 60)
        report["recorder"] = {"exit": recorder.returncode, "stdout": out.decode(), "stderr": err.decode()}
        recorder = None
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if recorder is not None:
            recorder.kill()
        if daemon is not None:
            report["daemon_exit_code"] = daemon.stop()
            report["records"] = for_report(daemon, started)
        lib.remove_cgroup("system.slice/vmt-seed.service")
        subprocess.run(["umount", str(DISK_MOUNT)], check=False)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
