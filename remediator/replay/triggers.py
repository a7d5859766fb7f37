"""The kernel's PSI triggers, played from a trace for the replayed daemon's watcher.

The watcher arms triggers and polls them through two functions it is given
(``arm`` and a poll object); here they hand out and report numbered
stand-ins instead of pressure file fds, and nothing reaches the operating
system.

When does a trigger fire? A trace written by the daemon's flight recorder
says (its ``trigger`` records): each one fires the triggers armed on that
cgroup at that time. A trace of ``remediator record`` has none (it arms
nothing), so the firing is worked out from the recorded stall counters as
the kernel works it out (Documentation/accounting/psi.rst): a trigger
``<some|full> <stall_us> <window_us>`` fires when the stall that grew within
the last window, counted from when it was armed, reaches ``stall_us``, at
most once per window. Between two samples the counter is taken on the line
between them (``remediator.replay.curves``), so the firing time is
estimated to well within one sampling interval instead of being rounded up
to the next sample.

Arming is refused as the recorded node refused it (the trace header's
capabilities): every trigger when a 2 s window was refused, those with a
window under 2 s when only the short window was, so the replayed daemon
falls back to sampling exactly where the recorded one did.
"""

from __future__ import annotations

import errno
import heapq
import select
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

from remediator.clock import Clock
from remediator.errors import CgroupGone, KernelFileMissing
from remediator.kernel.psi_trigger import PsiTrigger, TriggerRefused
from remediator.kernel.roots import KernelRoots
from remediator.replay.curves import Curve, StallCurves
from remediator.trace.format import TraceCapabilities

FIRST_FD = 1 << 20
SHORT_WINDOW_US = 2_000_000
_BROKEN = select.POLLERR | select.POLLHUP


@dataclass
class _Trigger:
    fd: int
    target: Optional[str]  # the cgroup; None for the node
    incarnation: int
    spec: PsiTrigger
    armed_at: float
    next_fire: Optional[float] = None
    registered: bool = False
    ready: bool = False
    broken: bool = False


@dataclass(frozen=True)
class Firing:
    """A trigger the replay fired: when, and on which cgroup (None: the node)."""

    t: float
    cgroup: Optional[str]


class ScriptedTriggers:
    """Arm, poll and close for the replayed watcher; see the module docstring."""

    def __init__(
        self,
        roots: KernelRoots,
        clock: Clock,
        curves: StallCurves,
        capabilities: TraceCapabilities,
        incarnation_of: Callable[[Optional[str]], int],
        synthesize: bool,
    ) -> None:
        self._roots = roots
        self._clock = clock
        self._curves = curves
        self._caps = capabilities
        self._incarnation_of = incarnation_of
        self._synthesize = synthesize
        self._next_fd = FIRST_FD
        self._by_fd: Dict[int, _Trigger] = {}
        self._heap: List[Tuple[float, int]] = []
        self.firings: List[Firing] = []

    # ---- the watcher's side ---------------------------------------------
    def arm(self, path: Path, spec: PsiTrigger, cgroup_dir: Optional[Path] = None) -> int:
        if self._caps.triggers_accepted is False:
            raise TriggerRefused(path, "the recorded node refused PSI triggers", errno.EINVAL)
        if self._caps.short_window_triggers is False and spec.window_us < SHORT_WINDOW_US:
            raise TriggerRefused(path, "the recorded node refused windows under 2 s", errno.EPERM)
        if cgroup_dir is not None and not cgroup_dir.is_dir():
            raise CgroupGone(path, "No such file or directory", errno.ENOENT)
        if not path.is_file():
            raise KernelFileMissing(path, "No such file or directory", errno.ENOENT)
        target = None if cgroup_dir is None else self._cgroup_name(cgroup_dir)
        fd = self._next_fd
        self._next_fd += 1
        now = self._clock.monotonic()
        trigger = _Trigger(fd, target, self._incarnation_of(target), spec, armed_at=now)
        self._by_fd[fd] = trigger
        self._schedule(trigger, now)
        return fd

    def _cgroup_name(self, cgroup_dir: Path) -> str:
        return cgroup_dir.relative_to(self._roots.cgroup_root).as_posix()

    def close_fd(self, fd: int) -> None:
        self._by_fd.pop(fd, None)

    def poll_factory(self) -> ScriptedPoll:
        return ScriptedPoll(self)

    # ---- the replay's side ----------------------------------------------
    def next_fire(self) -> Optional[float]:
        """When the next armed trigger fires on its own (never for a trace that says when)."""
        while self._heap:
            at, fd = self._heap[0]
            trigger = self._by_fd.get(fd)
            if trigger is not None and not trigger.broken and trigger.next_fire == at:
                return at
            heapq.heappop(self._heap)
        return None

    def fire_due(self, now: float) -> None:
        """Fire every trigger whose time has come."""
        while True:
            at = self.next_fire()
            if at is None or at > now:
                return
            _, fd = heapq.heappop(self._heap)
            trigger = self._by_fd[fd]
            self._fire(trigger, at)
            self._schedule(trigger, at + trigger.spec.window_us / 1e6)

    def fire_recorded(self, cgroup: Optional[str], now: float) -> None:
        """A recorded trigger event: fire what is armed on that cgroup."""
        for trigger in self._by_fd.values():
            if trigger.target == cgroup and not trigger.broken:
                self._fire(trigger, now)

    def removed(self, cgroup: str) -> None:
        """The cgroup went: its triggers report POLLERR|POLLHUP, as the kernel's do."""
        for trigger in self._by_fd.values():
            if trigger.target is not None and (
                trigger.target == cgroup or trigger.target.startswith(cgroup + "/")
            ):
                trigger.broken = True

    def _fire(self, trigger: _Trigger, at: float) -> None:
        trigger.ready = True
        self.firings.append(Firing(at, trigger.target))

    # ---- when the kernel would fire -------------------------------------
    def _schedule(self, trigger: _Trigger, after: float) -> None:
        trigger.next_fire = self._crossing(trigger, after) if self._synthesize else None
        if trigger.next_fire is not None:
            heapq.heappush(self._heap, (trigger.next_fire, trigger.fd))

    def _crossing(self, trigger: _Trigger, after: float) -> Optional[float]:
        """The first time at or after ``after`` when the stall in the trailing window reaches stall_us."""
        curve = self._curves.curve(trigger.target, trigger.spec.kind)
        if curve is None:
            return None
        end = curve.last_time(trigger.incarnation)
        start = max(after, trigger.armed_at)
        if end is None or end < start:
            return None
        window = trigger.spec.window_us / 1e6
        stall = float(trigger.spec.stall_us)

        def growth(t: float) -> float:
            now_value = curve.at(t, trigger.incarnation)
            then_value = curve.at(max(t - window, trigger.armed_at), trigger.incarnation)
            if now_value is None or then_value is None:
                return 0.0
            return now_value - then_value

        points = _breakpoints(curve, trigger, start, end, window)
        previous, previous_growth = start, growth(start)
        if previous_growth >= stall:
            return start
        for point in points:
            value = growth(point)
            if value >= stall:
                return previous + (stall - previous_growth) * (point - previous) / (value - previous_growth)
            previous, previous_growth = point, value
        return None


def _breakpoints(curve: Curve, trigger: _Trigger, start: float, end: float, window: float) -> List[float]:
    # Growth over the trailing window is linear between these: the samples, the samples a window
    # later (where they leave the window), and the arming a window later.
    points: Set[float] = set(curve.breakpoints(start, end, trigger.incarnation))
    points.update(t + window for t in curve.breakpoints(start - window, end - window, trigger.incarnation))
    armed_plus = trigger.armed_at + window
    if start < armed_plus <= end:
        points.add(armed_plus)
    return sorted(points)


class ScriptedPoll:
    """The poll object the watcher registers its trigger fds with: reports what was fired, once."""

    def __init__(self, triggers: ScriptedTriggers) -> None:
        self._triggers = triggers
        self._registered: Dict[int, int] = {}

    def register(self, __fd: int, __eventmask: int) -> None:
        self._registered[__fd] = __eventmask

    def unregister(self, __fd: int) -> None:
        del self._registered[__fd]

    def poll(self, __timeout: Optional[float]) -> List[Tuple[int, int]]:
        ready: List[Tuple[int, int]] = []
        for fd in self._registered:
            trigger = self._triggers._by_fd.get(fd)
            if trigger is None:
                continue
            if trigger.broken:
                ready.append((fd, _BROKEN | select.POLLPRI))
            elif trigger.ready:
                trigger.ready = False
                ready.append((fd, select.POLLPRI))
        return ready


__all__ = ["Firing", "ScriptedPoll", "ScriptedTriggers"]
