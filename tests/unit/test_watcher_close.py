"""Watcher.close(): every trigger fd closed, several at once, within a time bound, failures counted.

Closing a real PSI trigger fd waits for an RCU grace period in the kernel (bench/cost measured
48-50 s for 2000 fds one after another), so close() closes them from several threads and does not
wait past its bound for a close that hangs. The fake close functions here are injected the way
the arm function and the poll factory are; the fds are real (tests/fake_triggers.py).
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Iterator, List, Set

import pytest

from remediator.clock import FakeClock
from remediator.core.state import TargetKey
from remediator.daemon.fd_close import CLOSE_THREADS, ClosedFds, CloseFd
from remediator.daemon.watcher import Watcher
from remediator.kernel.psi_trigger import PsiTrigger
from tests.fake_triggers import FakeTriggers
from tests.fakefs import FakeKernel

SPEC = PsiTrigger("full", 100_000, 2_000_000)
CGROUPS = [f"fleet/w{i:02d}" for i in range(24)]
# Long enough never to be reached by a close that works, short enough that a test whose
# close() does not return in time fails rather than hangs.
NEVER_SEC = 30.0


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    k = FakeKernel(tmp_path)
    for name in CGROUPS:
        k.add_cgroup(name)
    return k


@pytest.fixture
def triggers(kernel: FakeKernel) -> Iterator[FakeTriggers]:
    fake = FakeTriggers(kernel.roots, transport="unix")
    yield fake
    fake.close()


def armed_watcher(kernel: FakeKernel, triggers: FakeTriggers, close_fd: CloseFd) -> Watcher:
    watcher = Watcher(
        kernel.roots,
        FakeClock(),
        5.0,
        arm=triggers.arm,
        poll_factory=triggers.poll_factory,
        close_fd=close_fd,
    )
    changes = watcher.sync({TargetKey("p", cgroup): SPEC for cgroup in CGROUPS})
    assert [c.kind for c in changes] == ["armed"] * len(CGROUPS)
    return watcher


def trigger_fds(triggers: FakeTriggers) -> List[int]:
    return [t.fd for t in triggers.armed]


def test_close_closes_every_trigger_fd_and_forgets_every_target(
    kernel: FakeKernel, triggers: FakeTriggers
) -> None:
    closed_by: List[int] = []

    def recording_close(fd: int) -> None:
        closed_by.append(fd)
        os.close(fd)

    watcher = armed_watcher(kernel, triggers, recording_close)

    result = watcher.close()

    assert result == ClosedFds(closed=len(CGROUPS), failed=(), unfinished=0)
    assert sorted(closed_by) == sorted(trigger_fds(triggers))
    assert all(t.closed_by_owner() for t in triggers.armed)
    assert list(watcher.keys()) == []
    assert watcher.close() == ClosedFds(closed=0)


def test_close_has_several_closes_in_flight_at_once(kernel: FakeKernel, triggers: FakeTriggers) -> None:
    # Each close waits until `together` closes have reached it: one after another, the first
    # would wait in vain, the barrier would break and close() would report them unfinished.
    together = 4
    assert together <= CLOSE_THREADS
    barrier = threading.Barrier(together, timeout=NEVER_SEC)
    lock = threading.Lock()
    threads: Set[int] = set()

    def meeting_close(fd: int) -> None:
        with lock:
            threads.add(threading.get_ident())
        try:
            barrier.wait()
        finally:
            os.close(fd)

    watcher = armed_watcher(kernel, triggers, meeting_close)
    assert len(CGROUPS) % together == 0

    result = watcher.close(timeout_sec=NEVER_SEC)

    assert result == ClosedFds(closed=len(CGROUPS), failed=(), unfinished=0)
    assert len(threads) >= together
    assert threading.get_ident() not in threads


def test_close_returns_at_its_bound_while_a_close_blocks_and_counts_it_unfinished(
    kernel: FakeKernel, triggers: FakeTriggers
) -> None:
    stuck_fd = -1  # set once armed
    release = threading.Event()
    stuck_closed = threading.Event()

    def close_with_one_stuck(fd: int) -> None:
        if fd == stuck_fd:
            release.wait(NEVER_SEC)
            os.close(fd)
            stuck_closed.set()
            return
        os.close(fd)

    watcher = armed_watcher(kernel, triggers, close_with_one_stuck)
    stuck_fd = trigger_fds(triggers)[0]

    result = watcher.close(timeout_sec=0.5)

    # Returned while the stuck close was still waiting (it waits NEVER_SEC for `release`).
    assert not release.is_set()
    assert result == ClosedFds(closed=len(CGROUPS) - 1, failed=(), unfinished=1)
    assert list(watcher.keys()) == []
    # The closing thread goes on: the fd is closed once the kernel lets go.
    release.set()
    assert stuck_closed.wait(NEVER_SEC)


def test_close_counts_the_fds_whose_close_failed_with_their_errno(
    kernel: FakeKernel, triggers: FakeTriggers
) -> None:
    failing: Set[int] = set()

    def close_failing_some(fd: int) -> None:
        os.close(fd)
        if fd in failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    watcher = armed_watcher(kernel, triggers, close_failing_some)
    failing.update(trigger_fds(triggers)[:3])

    result = watcher.close()

    assert result.closed == len(CGROUPS) - 3
    assert sorted(result.failed) == sorted((fd, errno.EIO) for fd in failing)
    assert result.unfinished == 0
