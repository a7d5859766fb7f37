"""The kernel's event, seen from outside: a PSI trigger of its own, polled at real-time priority.

Armed on the same cgroup with the same trigger as the daemon's, it lives in
the same PSI group, so the kernel's poller wakes both with the same update.
SCHED_FIFO makes its wake-up time the moment the kernel raised the event, not
the moment a busy CPU got round to it. One JSON line per event on stdout with
time.monotonic() (CLOCK_MONOTONIC, shared with the daemon and the bench).
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import Optional, Sequence

FIFO_PRIORITY = 50


def _emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    pressure_file, trigger = args[0], args[1]
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
        realtime = True
    except OSError:
        realtime = False
    fd = os.open(pressure_file, os.O_RDWR | os.O_NONBLOCK)
    # With the trailing NUL (kernel-facts.md: 6.1's writer eats the last byte).
    os.write(fd, trigger.encode("ascii") + b"\0")
    poller = select.poll()
    poller.register(fd, select.POLLPRI)
    _emit("armed", t=time.monotonic(), realtime=realtime)
    while True:
        for _fd, mask in poller.poll():
            now = time.monotonic()
            if mask & select.POLLERR:
                _emit("gone", t=now)
                return 0
            if mask & select.POLLPRI:
                _emit("fired", t=now)


if __name__ == "__main__":
    sys.exit(main())
