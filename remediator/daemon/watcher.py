"""The watcher: the only ``poll()`` in the program.

Each target (a policy on a cgroup, or on the node) is watched one of two ways:

- **armed**: a PSI trigger on the target's pressure file, one fd per trigger.
  The kernel reports ``POLLPRI`` at most once per window and re-arms by
  itself, so a fired fd needs no read.
- **sampling**: the kernel refused the trigger (CONFIG_PSI off, ``psi=0``, a
  kernel that answers EINVAL, no privilege), so the target is reported as due
  for a read every ``sampling_interval_sec`` instead.

``wait()`` blocks until an armed fd reports, a sampling target is due, a
wakeup fd (the signal self-pipe) is readable, or the caller's deadline passes.
Idle, it blocks in ``poll()`` with no timeout at all: watching costs nothing
while nothing happens.

Cost is kept flat for thousands of cgroups: one poll object registered and
unregistered incrementally, a dict from fd to target, and the sampling due
times in a heap (stale heap entries are skipped, and compacted when they pile up).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import select
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Protocol, Set, Tuple, Union

from remediator.clock import Clock
from remediator.core.state import TargetKey
from remediator.daemon.fd_close import (
    CLOSE_THREADS,
    CLOSE_TIMEOUT_SEC,
    ClosedFds,
    CloseFd,
    close_concurrently,
)
from remediator.errors import CgroupGone, KernelError, kernel_error_from_oserror
from remediator.kernel.psi_trigger import PsiTrigger
from remediator.kernel.roots import KernelRoots

ArmTrigger = Callable[[Path, PsiTrigger, Optional[Path]], int]
"""``arm(pressure_file, spec, cgroup_dir) -> fd``; raises a domain ``KernelError``."""


class PollObject(Protocol):
    """The part of ``select.poll()`` the watcher uses (injectable for tests)."""

    def register(self, __fd: int, __eventmask: int) -> None: ...

    def unregister(self, __fd: int) -> None: ...

    def poll(self, __timeout: Optional[float]) -> List[Tuple[int, int]]: ...


PollFactory = Callable[[], PollObject]

"""``close_fd(fd)``: ``os.close``, injectable for tests; raises ``OSError``."""

# Any of these means the fd will never fire again: the cgroup was removed
# (the kernel reports POLLERR *together with* POLLPRI then), PSI was disabled,
# or the fd is not open. They are tested before POLLPRI, or the loop would
# report "fired" forever on a dead fd.
_BROKEN = select.POLLERR | select.POLLHUP | select.POLLNVAL
_FLAG_NAMES = ((select.POLLERR, "POLLERR"), (select.POLLHUP, "POLLHUP"), (select.POLLNVAL, "POLLNVAL"))

# poll() takes a C int of milliseconds.
_MAX_POLL_MS = 2**31 - 1
_WAKEUP_READ_SIZE = 4096


def pressure_file(roots: KernelRoots, cgroup: Optional[str]) -> Path:
    """The memory pressure file of a cgroup, or of the node when ``cgroup`` is None."""
    if cgroup is None:
        return roots.proc_file("pressure/memory")
    return roots.cgroup_file(cgroup, "memory.pressure")


def poll_timeout_ms(now: float, wake_at: Optional[float]) -> Optional[int]:
    """Milliseconds until ``wake_at`` for poll(), or None to block indefinitely.

    Rounded *up*: rounding down would wake a little early, find nothing due,
    and poll again with 0 ms: a busy loop until the time comes.
    """
    if wake_at is None:
        return None
    remaining_ms = math.ceil((wake_at - now) * 1000.0)
    return max(0, min(remaining_ms, _MAX_POLL_MS))


@dataclass(frozen=True)
class WatchChange:
    """What ``sync()`` did to one target.

    kind: "armed" (trigger set), "sampling" (sampled by choice), "fallback"
    (the trigger was refused; sampled instead, ``errno``/``reason`` say why),
    "removed" (no longer desired; fd closed), "gone" (the cgroup vanished
    while arming; not watched).
    """

    kind: str
    key: TargetKey
    path: Path
    errno: Optional[int] = None
    # Without the path, so that the same refusal on many cgroups reads the same.
    reason: str = ""
    errno_name: str = ""


@dataclass(frozen=True)
class Fired:
    """The target's PSI trigger reported its threshold crossed."""

    key: TargetKey


@dataclass(frozen=True)
class Gone:
    """The target's trigger fd broke (cgroup removed, PSI disabled); it is closed and forgotten."""

    key: TargetKey
    reason: str = ""


@dataclass(frozen=True)
class SampleDue:
    """A sampling target is due for a read of its pressure file."""

    key: TargetKey


@dataclass(frozen=True)
class Woken:
    """A wakeup fd (the signal self-pipe) was readable; it has been drained."""

    fd: int
    data: bytes = b""


@dataclass(frozen=True)
class Timeout:
    """The caller's deadline has passed."""


WatchEvent = Union[Fired, Gone, SampleDue, Woken, Timeout]


@dataclass(frozen=True)
class WatchStats:
    armed: int
    sampling: int


@dataclass
class _Armed:
    fd: int
    spec: PsiTrigger


@dataclass
class _Sampled:
    spec: PsiTrigger
    # The sequence number of this target's one live heap entry; older entries are stale.
    heap_seq: int


def _flag_names(revents: int) -> str:
    return "|".join(name for flag, name in _FLAG_NAMES if revents & flag)


def _default_arm() -> ArmTrigger:
    # Imported late so that the watcher can be built and tested without the
    # real trigger writer.
    from remediator.kernel.psi_trigger import arm_trigger

    return arm_trigger


class Watcher:
    """Watches targets by PSI trigger or by sampling; see the module docstring."""

    def __init__(
        self,
        roots: KernelRoots,
        clock: Clock,
        sampling_interval_sec: float,
        arm: Optional[ArmTrigger] = None,
        poll_factory: PollFactory = select.poll,
        *,
        use_triggers: bool = True,
        close_fd: CloseFd = os.close,
    ) -> None:
        """``use_triggers=False`` samples every target without trying to arm it
        (for kernels known to refuse triggers; changes are then "sampling")."""
        if not sampling_interval_sec > 0:
            raise ValueError(f"sampling interval must be positive, not {sampling_interval_sec!r}")
        self._roots = roots
        self._clock = clock
        self._interval = sampling_interval_sec
        self._arm = arm if arm is not None else _default_arm()
        self._poll = poll_factory()
        self._close_fd = close_fd
        self._use_triggers = use_triggers
        # A simulated clock never moves while poll() blocks: poll without blocking
        # and let its owner move it.
        self._never_block = not clock.passes_while_waiting
        self._armed: Dict[TargetKey, _Armed] = {}
        self._key_by_fd: Dict[int, TargetKey] = {}
        self._sampled: Dict[TargetKey, _Sampled] = {}
        self._sample_heap: List[Tuple[float, int, TargetKey]] = []
        self._heap_seq = itertools.count()
        self._wakeup_fds: Set[int] = set()

    # ---- targets -------------------------------------------------------
    def sync(self, desired: Mapping[TargetKey, PsiTrigger]) -> List[WatchChange]:
        """Make the watched set equal to ``desired``: arm new targets, close
        removed ones, re-arm those whose trigger changed. Returns one change per
        target touched."""
        changes: List[WatchChange] = []
        for key in [k for k in self.keys() if k not in desired]:
            self.drop(key)
            changes.append(WatchChange("removed", key, pressure_file(self._roots, key.cgroup)))
        now = self._clock.monotonic()
        for key, spec in desired.items():
            current = self._spec_of(key)
            if current == spec:
                continue
            changes.append(self._start(key, spec, now))
        return changes

    def drop(self, key: TargetKey) -> bool:
        """Stop watching ``key`` (closing its fd); False when it was not watched."""
        armed = self._armed.pop(key, None)
        if armed is not None:
            self._release_fd(armed.fd, close=True)
            return True
        return self._sampled.pop(key, None) is not None

    def keys(self) -> Iterator[TargetKey]:
        """Every watched target, armed ones first."""
        yield from list(self._armed)
        yield from list(self._sampled)

    def mode_of(self, key: TargetKey) -> Optional[str]:
        """ "armed", "sampling", or None when ``key`` is not watched."""
        if key in self._armed:
            return "armed"
        if key in self._sampled:
            return "sampling"
        return None

    def next_sample_at(self) -> Optional[float]:
        """When the next sampling target is due (None: nothing is sampled). ``wait()`` wakes for it
        by itself; a replay on a simulated clock asks, to move the clock there."""
        return self._next_sample_at()

    def stats(self) -> WatchStats:
        return WatchStats(armed=len(self._armed), sampling=len(self._sampled))

    def add_wakeup_fd(self, fd: int) -> None:
        """Wake ``wait()`` when ``fd`` is readable (the signal self-pipe).

        The watcher drains it but does not own it: ``close()`` leaves it open.
        It is made non-blocking so that draining cannot hang.
        """
        os.set_blocking(fd, False)
        self._poll.register(fd, select.POLLIN)
        self._wakeup_fds.add(fd)

    def remove_wakeup_fd(self, fd: int) -> None:
        if fd in self._wakeup_fds:
            self._wakeup_fds.discard(fd)
            self._poll.unregister(fd)

    def close(self, timeout_sec: float = CLOSE_TIMEOUT_SEC) -> ClosedFds:
        """Close every trigger fd and forget every target. Wakeup fds are not ours to close.

        The fds are closed from up to ``CLOSE_THREADS`` threads at once, and this returns
        within about ``timeout_sec`` even if some close() blocks: the threads are daemon
        threads and go on closing what is left until the process exits. The result counts
        the fds closed, those whose close failed, and those not closed in time.
        """
        fds = [armed.fd for armed in self._armed.values()]
        for fd in fds:
            self._release_fd(fd, close=False)
        self._armed.clear()
        self._sampled.clear()
        self._sample_heap.clear()
        for fd in list(self._wakeup_fds):
            self.remove_wakeup_fd(fd)
        return close_concurrently(fds, self._close_fd, CLOSE_THREADS, timeout_sec)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- waiting -------------------------------------------------------
    def wait(self, deadline: Optional[float]) -> List[WatchEvent]:
        """Block until something happens or the monotonic ``deadline`` passes.

        Returns every event that is ready, with ``Timeout`` among them when the
        deadline has passed. With a fake clock it never blocks and may return
        nothing: the test moves the clock.
        """
        while True:
            timeout_ms = (
                0 if self._never_block else poll_timeout_ms(self._clock.monotonic(), self._wake_at(deadline))
            )
            try:
                ready = self._poll.poll(timeout_ms)
            except InterruptedError:
                # PEP 475 retries EINTR inside poll(); an injected poll may not.
                # Either way the loop recomputes the timeout from the deadline.
                ready = []
            events = self._dispatch(ready)
            now = self._clock.monotonic()
            events.extend(self._due_samples(now))
            if deadline is not None and now >= deadline:
                events.append(Timeout())
            if events or self._never_block:
                return events

    def _wake_at(self, deadline: Optional[float]) -> Optional[float]:
        next_sample = self._next_sample_at()
        if next_sample is None:
            return deadline
        if deadline is None:
            return next_sample
        return min(deadline, next_sample)

    def _dispatch(self, ready: List[Tuple[int, int]]) -> List[WatchEvent]:
        events: List[WatchEvent] = []
        for fd, revents in ready:
            if fd in self._wakeup_fds:
                events.append(self._drain_wakeup(fd, revents))
                continue
            key = self._key_by_fd.get(fd)
            if key is None:
                continue
            if revents & _BROKEN:
                # Before POLLPRI: see _BROKEN. POLLNVAL means the fd number is
                # not open (any more): closing it could close someone else's.
                del self._armed[key]
                self._release_fd(fd, close=not revents & select.POLLNVAL)
                events.append(Gone(key, reason=_flag_names(revents)))
            elif revents & select.POLLPRI:
                events.append(Fired(key))
        return events

    def _drain_wakeup(self, fd: int, revents: int) -> Woken:
        data = b""
        at_eof = False
        if revents & select.POLLIN:
            while True:
                try:
                    chunk = os.read(fd, _WAKEUP_READ_SIZE)
                except BlockingIOError:
                    break
                if not chunk:
                    at_eof = True
                    break
                data += chunk
                if len(chunk) < _WAKEUP_READ_SIZE:
                    break
        if at_eof or revents & _BROKEN:
            # A closed or broken wakeup fd would be reported readable forever.
            self.remove_wakeup_fd(fd)
        return Woken(fd, data)

    # ---- arming and sampling -------------------------------------------
    def _start(self, key: TargetKey, spec: PsiTrigger, now: float) -> WatchChange:
        """Watch ``key`` with ``spec``, replacing whatever watched it before."""
        path = pressure_file(self._roots, key.cgroup)
        if not self._use_triggers:
            self.drop(key)
            self._start_sampling(key, spec, now)
            return WatchChange("sampling", key, path)
        cgroup_dir = None if key.cgroup is None else self._roots.cgroup_dir(key.cgroup)
        try:
            fd = self._arm(path, spec, cgroup_dir)
        except KernelError as exc:
            error = exc
        except OSError as exc:
            # The arm function should classify its errors; classify any that slip through.
            error = kernel_error_from_oserror(exc, path, cgroup_dir)
        else:
            # Arm the new trigger before closing the old one: no gap in watching.
            self.drop(key)
            self._poll.register(fd, select.POLLPRI)
            self._armed[key] = _Armed(fd, spec)
            self._key_by_fd[fd] = key
            return WatchChange("armed", key, path)
        self.drop(key)
        if isinstance(error, CgroupGone):
            return WatchChange("gone", key, path, error.errno, error.message, error.errno_name)
        self._start_sampling(key, spec, now)
        return WatchChange("fallback", key, path, error.errno, error.message, error.errno_name)

    def _start_sampling(self, key: TargetKey, spec: PsiTrigger, now: float) -> None:
        # Due at once: the first sample is the baseline the next one is compared with.
        self._sampled[key] = _Sampled(spec, heap_seq=-1)
        self._schedule_sample(key, now)

    def _schedule_sample(self, key: TargetKey, at: float) -> None:
        seq = next(self._heap_seq)
        self._sampled[key].heap_seq = seq
        heapq.heappush(self._sample_heap, (at, seq, key))
        if len(self._sample_heap) > 2 * len(self._sampled) + 64:
            self._compact_heap()

    def _compact_heap(self) -> None:
        self._sample_heap = [entry for entry in self._sample_heap if self._is_live(entry)]
        heapq.heapify(self._sample_heap)

    def _is_live(self, entry: Tuple[float, int, TargetKey]) -> bool:
        sampled = self._sampled.get(entry[2])
        return sampled is not None and sampled.heap_seq == entry[1]

    def _next_sample_at(self) -> Optional[float]:
        while self._sample_heap and not self._is_live(self._sample_heap[0]):
            heapq.heappop(self._sample_heap)
        return self._sample_heap[0][0] if self._sample_heap else None

    def _due_samples(self, now: float) -> List[WatchEvent]:
        due: List[WatchEvent] = []
        rescheduled: List[TargetKey] = []
        while self._sample_heap and self._sample_heap[0][0] <= now:
            entry = heapq.heappop(self._sample_heap)
            if self._is_live(entry):
                due.append(SampleDue(entry[2]))
                rescheduled.append(entry[2])
        for key in rescheduled:
            # From now, not from the missed due time: after a long block each
            # target is sampled once, not once per missed interval.
            self._schedule_sample(key, now + self._interval)
        return due

    # ---- bookkeeping ---------------------------------------------------
    def _spec_of(self, key: TargetKey) -> Optional[PsiTrigger]:
        armed = self._armed.get(key)
        if armed is not None:
            return armed.spec
        sampled = self._sampled.get(key)
        return sampled.spec if sampled is not None else None

    def _release_fd(self, fd: int, *, close: bool) -> None:
        self._key_by_fd.pop(fd, None)
        with contextlib.suppress(KeyError):
            self._poll.unregister(fd)
        if close:
            # Nothing useful can be done about a failed close of a trigger fd;
            # it must not take the daemon down.
            with contextlib.suppress(OSError):
                self._close_fd(fd)


__all__ = [
    "CLOSE_THREADS",
    "CLOSE_TIMEOUT_SEC",
    "ArmTrigger",
    "CloseFd",
    "ClosedFds",
    "Fired",
    "Gone",
    "PollFactory",
    "PollObject",
    "SampleDue",
    "Timeout",
    "WatchChange",
    "WatchEvent",
    "WatchStats",
    "Watcher",
    "Woken",
    "poll_timeout_ms",
    "pressure_file",
]
