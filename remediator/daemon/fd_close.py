"""Closing many PSI trigger fds at once, fast and with a time bound (the daemon's stop).

Closing a trigger fd waits in the kernel; ``close_concurrently`` overlaps those
waits from several threads and gives up waiting after a bound, so a stop with
thousands of armed triggers ends in seconds, after the restores.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, List, Tuple

CloseFd = Callable[[int], None]


# Closing a PSI trigger fd is slow in the kernel: psi_trigger_destroy() waits for an RCU grace
# period (synchronize_rcu() on 6.1) and, for a cgroup's last trigger, for its psimon thread to
# stop. One after another, 2000 fds took 48-50 s to close (bench/cost, 6.1 under TCG), most of
# it waiting. Concurrent synchronize_rcu() calls share a grace period and os.close() releases
# the GIL, so closing from several threads lets the waits overlap. Measured closing 2000 armed
# triggers (bench/results/cost-stop-2026-12-05.md, 2 vCPUs): 1 thread 47.5 s, 4 10.7 s, 16 2.3 s,
# 32 1.7 s, 64 2.1 s, 256 3.6 s: 32 was the fastest (one series on a shared host, so a broad
# minimum rather than a sharp one); beyond it the closes got slower again.
CLOSE_THREADS = 32
# Stop must end well within systemd's TimeoutStopSec (90 s by default), after the restores;
# an fd whose close hangs in the kernel must not hold the stop up past this.
CLOSE_TIMEOUT_SEC = 10.0


@dataclass(frozen=True)
class ClosedFds:
    """What ``Watcher.close()`` did: fds closed, fds whose close failed (fd, errno), and fds
    still being closed when its time bound ran out."""

    closed: int
    failed: Tuple[Tuple[int, int], ...] = ()
    unfinished: int = 0


def close_concurrently(fds: List[int], close_fd: CloseFd, threads: int, timeout_sec: float) -> ClosedFds:
    if not fds:
        return ClosedFds(closed=0)
    pending = iter(fds)
    lock = threading.Lock()
    all_done = threading.Event()
    closed: List[int] = []
    failed: List[Tuple[int, int]] = []

    def close_some() -> None:
        while True:
            with lock:
                fd = next(pending, None)
            if fd is None:
                return
            try:
                close_fd(fd)
            except OSError as exc:
                with lock:
                    failed.append((fd, exc.errno or 0))
            else:
                with lock:
                    closed.append(fd)
            with lock:
                if len(closed) + len(failed) == len(fds):
                    all_done.set()

    # Daemon threads: a close() stuck in the kernel must not keep the process from exiting
    # (a ThreadPoolExecutor's workers are joined at interpreter exit).
    started = 0
    for index in range(min(threads, len(fds))):
        try:
            threading.Thread(target=close_some, name=f"remediator-close-{index}", daemon=True).start()
        except RuntimeError:  # no more threads to be had: close with those we have
            break
        started += 1
    if started == 0:
        close_some()  # one after another, as before, rather than leave them open
    all_done.wait(timeout_sec)
    with lock:
        return ClosedFds(
            closed=len(closed), failed=tuple(failed), unfinished=len(fds) - len(closed) - len(failed)
        )
