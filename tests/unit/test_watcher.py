"""The watcher: triggers on real fds (tests/fake_triggers.py), sampling under a fake clock."""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

from remediator.clock import FakeClock
from remediator.core.state import TargetKey
from remediator.daemon.watcher import (
    Fired,
    Gone,
    SampleDue,
    Timeout,
    Watcher,
    WatchEvent,
    Woken,
    poll_timeout_ms,
)
from remediator.kernel.psi_trigger import PsiTrigger
from tests.fake_triggers import FakeTriggers
from tests.fakefs import FakeKernel

SPEC = PsiTrigger("some", 150_000, 1_000_000)
OTHER_SPEC = PsiTrigger("full", 100_000, 2_000_000)
INTERVAL = 5.0


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    k = FakeKernel(tmp_path)
    for name in ("system.slice/a.service", "system.slice/b.service", "system.slice/c.service"):
        k.add_cgroup(name)
    return k


@pytest.fixture(params=["unix", "tcp"])
def triggers(request: pytest.FixtureRequest, kernel: FakeKernel) -> Iterator[FakeTriggers]:
    fake = FakeTriggers(kernel.roots, transport=request.param)
    yield fake
    fake.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def watcher(kernel: FakeKernel, clock: FakeClock, triggers: FakeTriggers) -> Iterator[Watcher]:
    w = Watcher(kernel.roots, clock, INTERVAL, arm=triggers.arm, poll_factory=triggers.poll_factory)
    yield w
    w.close()


def key(cgroup: Optional[str], policy: str = "p") -> TargetKey:
    return TargetKey(policy, cgroup)


A = key("system.slice/a.service")
B = key("system.slice/b.service")
C = key("system.slice/c.service")
NODE = key(None, "node")


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


# ---- triggers ------------------------------------------------------------------


def test_fired_trigger_is_reported_with_its_key(watcher: Watcher, triggers: FakeTriggers) -> None:
    changes = watcher.sync({A: SPEC, B: SPEC})
    assert [(c.kind, c.key) for c in changes] == [("armed", A), ("armed", B)]

    triggers.fire("system.slice/b.service")

    assert watcher.wait(None) == [Fired(B)]


def test_fired_trigger_is_reported_once_per_kernel_event(watcher: Watcher, triggers: FakeTriggers) -> None:
    watcher.sync({A: SPEC})
    triggers.fire("system.slice/a.service")
    assert watcher.wait(None) == [Fired(A)]

    # The kernel re-arms by itself and nothing is read: no second report without a new event.
    assert watcher.wait(None) == []
    triggers.fire("system.slice/a.service")
    assert watcher.wait(None) == [Fired(A)]


def test_removed_cgroup_reports_gone_not_fired_and_closes_the_fd(
    watcher: Watcher, triggers: FakeTriggers
) -> None:
    watcher.sync({A: SPEC, B: SPEC})
    fd = triggers.live("system.slice/a.service")[0].fd

    # The kernel reports POLLERR together with POLLPRI when a cgroup is removed.
    triggers.remove_cgroup("system.slice/a.service")
    events = watcher.wait(None)

    assert len(events) == 1
    assert isinstance(events[0], Gone)
    assert events[0].key == A
    assert "POLLERR" in events[0].reason
    assert not fd_is_open(fd)
    assert watcher.mode_of(A) is None
    assert watcher.stats().armed == 1


def test_gone_trigger_is_forgotten_so_the_loop_does_not_spin(
    watcher: Watcher, triggers: FakeTriggers, clock: FakeClock
) -> None:
    watcher.sync({A: SPEC})
    triggers.remove_cgroup("system.slice/a.service")
    assert [type(e) for e in watcher.wait(None)] == [Gone]

    deadline = clock.monotonic() + 1.0
    assert watcher.wait(deadline) == []
    clock.advance(1.0)
    assert watcher.wait(deadline) == [Timeout()]


def test_sync_arms_new_cgroups_and_closes_removed_ones(watcher: Watcher, triggers: FakeTriggers) -> None:
    watcher.sync({A: SPEC, B: SPEC})
    old_b = triggers.live("system.slice/b.service")[0]

    changes = watcher.sync({A: SPEC, C: SPEC})

    assert [(c.kind, c.key) for c in changes] == [("removed", B), ("armed", C)]
    assert old_b.closed_by_owner()
    assert len(triggers.live("system.slice/a.service")) == 1
    assert len(triggers.live("system.slice/c.service")) == 1
    assert set(watcher.keys()) == {A, C}
    # Unchanged targets are not re-armed.
    assert [t.path.parent.name for t in triggers.armed] == ["a.service", "b.service", "c.service"]


def test_changed_trigger_spec_rearms_with_the_new_spec(watcher: Watcher, triggers: FakeTriggers) -> None:
    watcher.sync({A: SPEC})
    old = triggers.live("system.slice/a.service")[0]

    changes = watcher.sync({A: OTHER_SPEC})

    assert [(c.kind, c.key) for c in changes] == [("armed", A)]
    assert old.closed_by_owner()
    [new] = triggers.live("system.slice/a.service")
    assert new.written == b"full 100000 2000000\0"
    triggers.fire("system.slice/a.service")
    assert watcher.wait(None) == [Fired(A)]


def test_the_same_kernel_trigger_again_does_not_rearm(watcher: Watcher, triggers: FakeTriggers) -> None:
    watcher.sync({A: SPEC})

    changes = watcher.sync({A: PsiTrigger("some", 150_000, 1_000_000)})

    assert changes == []
    assert len(triggers.armed) == 1


def test_node_target_arms_the_proc_pressure_file(
    watcher: Watcher, triggers: FakeTriggers, kernel: FakeKernel
) -> None:
    [change] = watcher.sync({NODE: SPEC})

    assert change.kind == "armed"
    assert change.path == kernel.proc_root / "pressure" / "memory"
    assert [t.path for t in triggers.armed] == [kernel.proc_root / "pressure" / "memory"]
    triggers.fire(None)
    assert watcher.wait(None) == [Fired(NODE)]


def test_cgroup_target_arms_its_memory_pressure_file(
    watcher: Watcher, triggers: FakeTriggers, kernel: FakeKernel
) -> None:
    [change] = watcher.sync({A: SPEC})

    expected = kernel.cgroup_root / "system.slice" / "a.service" / "memory.pressure"
    assert change.path == expected
    assert [t.path for t in triggers.armed] == [expected]


def test_several_policies_on_one_cgroup_get_one_trigger_each(
    watcher: Watcher, triggers: FakeTriggers
) -> None:
    first, second = key("system.slice/a.service", "p1"), key("system.slice/a.service", "p2")
    watcher.sync({first: SPEC, second: OTHER_SPEC})

    assert triggers.fire("system.slice/a.service", spec=OTHER_SPEC) == 1
    assert watcher.wait(None) == [Fired(second)]
    assert watcher.stats().armed == 2


def test_cgroup_gone_while_arming_is_reported_and_not_watched(
    watcher: Watcher, kernel: FakeKernel, triggers: FakeTriggers
) -> None:
    ghost = key("system.slice/ghost.service")

    [change] = watcher.sync({ghost: SPEC})

    assert change.kind == "gone"
    assert change.errno == errno.ENOENT
    assert watcher.mode_of(ghost) is None
    assert watcher.stats().armed == 0
    assert watcher.stats().sampling == 0
    assert triggers.armed == []


def test_close_closes_every_trigger_fd(watcher: Watcher, triggers: FakeTriggers) -> None:
    watcher.sync({A: SPEC, B: SPEC, NODE: SPEC})

    watcher.close()

    assert all(t.closed_by_owner() for t in triggers.armed)
    assert watcher.stats().armed == 0
    assert list(watcher.keys()) == []


def test_drop_stops_watching_one_target(watcher: Watcher, triggers: FakeTriggers) -> None:
    watcher.sync({A: SPEC, B: SPEC})

    assert watcher.drop(A)
    assert not watcher.drop(A)
    assert triggers.armed[0].closed_by_owner()
    assert list(watcher.keys()) == [B]


# ---- fallback to sampling -----------------------------------------------------------


def test_refused_trigger_falls_back_to_sampling_with_errno_and_reason(
    watcher: Watcher, triggers: FakeTriggers
) -> None:
    triggers.refuse("system.slice/a.service", errno.EINVAL)

    changes = watcher.sync({A: SPEC, B: SPEC})

    assert [(c.kind, c.key) for c in changes] == [("fallback", A), ("armed", B)]
    fallback = changes[0]
    assert fallback.errno == errno.EINVAL
    assert fallback.errno_name == "EINVAL"
    assert "Invalid argument" in fallback.reason
    # The reason reads the same for every cgroup, so the service can log it once.
    assert "a.service" not in fallback.reason
    assert watcher.mode_of(A) == "sampling"
    assert watcher.stats().armed == 1
    assert watcher.stats().sampling == 1


def test_every_refused_target_is_reported(watcher: Watcher, triggers: FakeTriggers) -> None:
    triggers.refuse_all(errno.EPERM)

    changes = watcher.sync({A: SPEC, B: SPEC, NODE: SPEC})

    assert [c.kind for c in changes] == ["fallback"] * 3
    assert {c.errno for c in changes} == {errno.EPERM}


def test_sampling_target_is_due_at_once_then_every_interval(
    watcher: Watcher, triggers: FakeTriggers, clock: FakeClock
) -> None:
    triggers.refuse_all(errno.EINVAL)
    watcher.sync({A: SPEC})

    # Due at once: the first read is the baseline the next one is compared with.
    assert watcher.wait(None) == [SampleDue(A)]
    assert watcher.wait(None) == []
    clock.advance(INTERVAL - 0.5)
    assert watcher.wait(None) == []
    clock.advance(0.5)
    assert watcher.wait(None) == [SampleDue(A)]


def test_sampling_after_a_long_block_is_due_once_and_rescheduled_from_now(
    watcher: Watcher, triggers: FakeTriggers, clock: FakeClock
) -> None:
    triggers.refuse_all(errno.EINVAL)
    watcher.sync({A: SPEC, B: SPEC})
    assert watcher.wait(None) == [SampleDue(A), SampleDue(B)]

    clock.advance(10 * INTERVAL + 1.0)
    assert watcher.wait(None) == [SampleDue(A), SampleDue(B)]
    assert watcher.wait(None) == []
    clock.advance(INTERVAL - 0.5)
    assert watcher.wait(None) == []
    clock.advance(0.5)
    assert watcher.wait(None) == [SampleDue(A), SampleDue(B)]


def test_removed_sampling_target_is_no_longer_due(
    watcher: Watcher, triggers: FakeTriggers, clock: FakeClock
) -> None:
    triggers.refuse_all(errno.EINVAL)
    watcher.sync({A: SPEC, B: SPEC})
    watcher.wait(None)

    changes = watcher.sync({B: SPEC})
    clock.advance(INTERVAL)

    assert [(c.kind, c.key) for c in changes] == [("removed", A)]
    assert watcher.wait(None) == [SampleDue(B)]


def test_refused_target_is_armed_when_its_new_spec_is_accepted(
    watcher: Watcher, triggers: FakeTriggers
) -> None:
    triggers.refuse("system.slice/a.service", errno.EPERM)
    watcher.sync({A: SPEC})
    triggers.refuse("system.slice/a.service", None)

    [change] = watcher.sync({A: OTHER_SPEC})

    assert change.kind == "armed"
    assert watcher.stats().sampling == 0
    assert watcher.wait(None) == []  # no sample left behind


def test_sampling_only_watcher_never_arms(
    kernel: FakeKernel, clock: FakeClock, triggers: FakeTriggers
) -> None:
    with Watcher(
        kernel.roots,
        clock,
        INTERVAL,
        arm=triggers.arm,
        poll_factory=triggers.poll_factory,
        use_triggers=False,
    ) as w:
        changes = w.sync({A: SPEC, NODE: SPEC})

        assert [c.kind for c in changes] == ["sampling", "sampling"]
        assert triggers.armed == []
        assert w.wait(None) == [SampleDue(A), SampleDue(NODE)]


def test_raw_oserror_from_arm_is_classified(kernel: FakeKernel, clock: FakeClock) -> None:
    def arm(path: Path, spec: PsiTrigger, cgroup_dir: Optional[Path]) -> int:
        raise OSError(errno.EACCES, "Permission denied")

    with Watcher(kernel.roots, clock, INTERVAL, arm=arm) as w:
        [change] = w.sync({A: SPEC})

    assert change.kind == "fallback"
    assert change.errno_name == "EACCES"


# ---- wakeup fds --------------------------------------------------------------------


def test_wakeup_fd_is_drained_and_reported(watcher: Watcher) -> None:
    read_fd, write_fd = os.pipe()
    try:
        watcher.add_wakeup_fd(read_fd)
        os.write(write_fd, b"\x0f\x01")

        assert watcher.wait(None) == [Woken(read_fd, b"\x0f\x01")]
        assert watcher.wait(None) == []
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_closed_wakeup_pipe_is_dropped_instead_of_spinning(watcher: Watcher, clock: FakeClock) -> None:
    read_fd, write_fd = os.pipe()
    try:
        watcher.add_wakeup_fd(read_fd)
        os.close(write_fd)

        assert watcher.wait(None) == [Woken(read_fd, b"")]
        assert watcher.wait(clock.monotonic()) == [Timeout()]
    finally:
        os.close(read_fd)


def test_close_leaves_wakeup_fds_open(watcher: Watcher) -> None:
    read_fd, write_fd = os.pipe()
    try:
        watcher.add_wakeup_fd(read_fd)
        watcher.close()
        assert fd_is_open(read_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)


# ---- timeouts (a clock that moves while poll() blocks, so the watcher computes them) --------


class ManualClock:
    """A clock the scripted poll moves, as real time moves while poll() blocks."""

    passes_while_waiting = True

    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now


class ScriptedPoll:
    """Records each timeout; "sleeps" by moving the clock; returns scripted results."""

    def __init__(self, clock: ManualClock, results: Optional[List[object]] = None) -> None:
        self.clock = clock
        self.results = list(results or [])
        self.timeouts: List[Optional[float]] = []

    def register(self, __fd: int, __eventmask: int) -> None:
        pass

    def unregister(self, __fd: int) -> None:
        pass

    def poll(self, __timeout: Optional[float]) -> List[Tuple[int, int]]:
        self.timeouts.append(__timeout)
        assert len(self.timeouts) <= 20, f"busy loop: polled with {self.timeouts}"
        if self.results:
            result = self.results.pop(0)
            if isinstance(result, BaseException):
                raise result
            assert isinstance(result, list)
            return result
        assert __timeout is not None and __timeout >= 0, "would block forever"
        self.clock.now += __timeout / 1000.0
        return []


def no_arm(path: Path, spec: PsiTrigger, cgroup_dir: Optional[Path]) -> int:
    raise AssertionError("not armed in these tests")


def test_poll_timeout_rounds_up_and_is_never_negative() -> None:
    assert poll_timeout_ms(10.0, None) is None
    assert poll_timeout_ms(10.0, 10.0) == 0
    assert poll_timeout_ms(10.0, 9.0) == 0
    assert poll_timeout_ms(10.0, 10.0001) == 1
    assert poll_timeout_ms(10.0, 11.5) == 1500
    assert poll_timeout_ms(0.0, 1e12) == 2**31 - 1


def test_wait_polls_until_the_deadline_rounded_up(kernel: FakeKernel) -> None:
    clock = ManualClock()
    poll = ScriptedPoll(clock)
    w = Watcher(kernel.roots, clock, INTERVAL, arm=no_arm, poll_factory=lambda: poll)

    events = w.wait(clock.now + 0.0101)

    assert events == [Timeout()]
    assert poll.timeouts == [11]


def test_idle_wait_blocks_without_a_timeout(kernel: FakeKernel) -> None:
    clock = ManualClock()
    read_fd, write_fd = os.pipe()
    poll = ScriptedPoll(clock, results=[[(read_fd, select.POLLIN)]])
    try:
        w = Watcher(kernel.roots, clock, INTERVAL, arm=no_arm, poll_factory=lambda: poll)
        w.add_wakeup_fd(read_fd)
        os.write(write_fd, b"\x01")

        assert w.wait(None) == [Woken(read_fd, b"\x01")]
        assert poll.timeouts == [None]
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_wait_wakes_for_the_next_sample_without_a_deadline(kernel: FakeKernel) -> None:
    clock = ManualClock()
    poll = ScriptedPoll(clock)
    w = Watcher(kernel.roots, clock, INTERVAL, arm=no_arm, poll_factory=lambda: poll, use_triggers=False)
    w.sync({A: SPEC})

    assert w.wait(None) == [SampleDue(A)]
    assert w.wait(None) == [SampleDue(A)]
    assert poll.timeouts == [0, 5000]


def test_wait_wakes_for_whichever_comes_first_sample_or_deadline(kernel: FakeKernel) -> None:
    clock = ManualClock()
    poll = ScriptedPoll(clock)
    w = Watcher(kernel.roots, clock, INTERVAL, arm=no_arm, poll_factory=lambda: poll, use_triggers=False)
    w.sync({A: SPEC})
    w.wait(None)

    assert w.wait(clock.now + 2.0) == [Timeout()]
    assert w.wait(clock.now + 60.0) == [SampleDue(A)]
    assert poll.timeouts == [0, 2000, 3000]


def test_interrupted_poll_is_retried_until_the_deadline(kernel: FakeKernel) -> None:
    clock = ManualClock()
    poll = ScriptedPoll(clock, results=[InterruptedError(), InterruptedError()])
    w = Watcher(kernel.roots, clock, INTERVAL, arm=no_arm, poll_factory=lambda: poll)

    events: List[WatchEvent] = w.wait(clock.now + 1.0)

    assert events == [Timeout()]
    assert poll.timeouts == [1000, 1000, 1000]


def test_deadline_already_passed_returns_timeout_without_blocking(kernel: FakeKernel) -> None:
    clock = ManualClock()
    poll = ScriptedPoll(clock)
    w = Watcher(kernel.roots, clock, INTERVAL, arm=no_arm, poll_factory=lambda: poll)

    assert w.wait(clock.now - 3.0) == [Timeout()]
    assert poll.timeouts == [0]


def test_sampling_interval_must_be_positive(kernel: FakeKernel) -> None:
    with pytest.raises(ValueError, match="positive"):
        Watcher(kernel.roots, FakeClock(), 0.0, arm=no_arm)
