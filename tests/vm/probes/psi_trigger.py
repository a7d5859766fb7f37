"""Arm a PSI trigger on a child cgroup, squeeze the child under memory.high, report whether it fired.

The trigger is written with a trailing NUL (kernel-facts.md: 6.1's PSI writer
overwrites the buffer's last byte). The pressure comes from anonymous memory
far above memory.high with no swap: the kernel can only throttle, which is a
`full` stall (the child is the cgroup's only task).
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Union

CGROUP = Path("/sys/fs/cgroup/vm-probe-psi")
TRIGGER = b"full 100000 1000000\0"
MEMORY_HIGH = 16 << 20
ALLOCATION = 256 << 20
WAIT_FOR_EVENT_MS = 20_000

Report = Dict[str, Union[str, bool, int, float, None]]


def _squeeze_in_child() -> int:
    pid = os.fork()
    if pid == 0:
        try:
            (CGROUP / "cgroup.procs").write_text(str(os.getpid()))
            # bytes * n touches every page: anonymous memory the kernel cannot reclaim without swap.
            _hog = b"\x01" * ALLOCATION
            time.sleep(60)
        finally:
            os._exit(0)
    return pid


def _remove_cgroup() -> None:
    # The killed child's exit is asynchronous to waitpid's return on some kernels: retry briefly.
    for _ in range(50):
        try:
            CGROUP.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.1)
    CGROUP.rmdir()


def main(out_file: str) -> None:
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "memory.high").write_text(str(MEMORY_HIGH))
    report: Report = {"trigger_error": None, "fired": False, "pollerr": False}
    descriptor = os.open(CGROUP / "memory.pressure", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(descriptor, TRIGGER)
    except OSError as exc:
        report["trigger_error"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    child: Optional[int] = None
    if report["trigger_error"] is None:
        poller = select.poll()
        poller.register(descriptor, select.POLLPRI)
        started = time.monotonic()
        child = _squeeze_in_child()
        events = poller.poll(WAIT_FOR_EVENT_MS)
        report["seconds_to_event"] = round(time.monotonic() - started, 3)
        for _, mask in events:
            report["pollerr"] = bool(mask & select.POLLERR)
            report["fired"] = bool(mask & select.POLLPRI) and not report["pollerr"]
    report["memory_pressure"] = (CGROUP / "memory.pressure").read_text()
    report["memory_events"] = (CGROUP / "memory.events").read_text()
    if child is not None:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    os.close(descriptor)
    _remove_cgroup()
    Path(out_file).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
