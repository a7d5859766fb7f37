"""The kernel's PSI triggers, played from a trace for the replayed daemon's watcher.

The watcher arms triggers and polls them through two functions it is given
(``arm`` and a poll object); here they hand out and report numbered
stand-ins instead of pressure file fds, and nothing reaches the operating
system.

When does a trigger fire? Where the trace says (``trigger`` records), each
one fires the triggers armed on that cgroup at that time: the flight
recorder's events, and those of the targets ``remediator record`` armed (its
header's ``triggers``; a target armed there that never fired has no event).
Elsewhere (a trace of ``record`` without that field, or a target it could not
arm) the firing is worked out from the recorded stall counters as
the kernel works it out (kernel/sched/psi.c of 6.1, psi_poll_work and
update_triggers): the kernel looks at a cgroup's triggers only on its
polling ticks, which start one jiffy after stall appears (the window counts
from there) and follow each other every tenth of the shortest window plus
up to a jiffy (the ``+ 1`` of its timer), for as long as stall keeps
changing within a window. On a tick that saw new stall, a trigger
``<some|full> <stall_us> <window_us>`` fires when the stall in its last
window reaches ``stall_us`` and its previous event is at least a window
old. Between two samples the counter is taken on the line between them
(``remediator.replay.curves``).

The ticks matter for fidelity, not for their own sake: an event never
comes on the exact window boundary but a tick's slack after it, so the
daemon's timed look at ``verify_sec`` (= the window) after acting on an
event comes before the next event, as it does on a real kernel, and the
two are two looks. Firing on an exact 2 s grid made them one look, and the
replayed daemon reclaimed every other event where the real one reclaimed
at every event (tests/vm/test_vm_replay.py). A trigger armed while the
cgroup's polling is active starts with a stale window (the kernel's reset
at creation is at time 0): its first tick fires on the whole counter, the
spurious first event the core's confirmation rejects.

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
from typing import Callable, Dict, List, Optional, Tuple

from remediator.clock import Clock
from remediator.errors import CgroupGone, KernelFileMissing
from remediator.kernel.psi_trigger import PsiTrigger, TriggerRefused
from remediator.kernel.roots import KernelRoots
from remediator.replay.curves import StallCurves
from remediator.trace.format import TraceCapabilities

FIRST_FD = 1 << 20
SHORT_WINDOW_US = 2_000_000
# The kernel's polling: UPDATES_PER_WINDOW ticks per (shortest) window, each late by up to a jiffy.
UPDATES_PER_WINDOW = 10
# One jiffy at HZ=250 (Debian's and most distributions' x86 kernels): the start of polling after the
# first stall, and the slack the kernel's timer adds to every tick (nsecs_to_jiffies(...) + 1).
JIFFY_SEC = 0.004
_BROKEN = select.POLLERR | select.POLLHUP


@dataclass
class _Polling:
    """Where the kernel's polling of a trigger stands, as of its last tick (or event)."""

    tick: Optional[float]  # the last tick; None: not polling (no stall within a window)
    origin: float  # where the trigger's window counts from (polling started, or armed)
    last_change: float  # the last tick that saw new stall
    last_event: Optional[float] = None
    stale_until: Optional[float] = None  # armed while polling: the window counts the whole counter


@dataclass
class _Trigger:
    fd: int
    target: Optional[str]  # the cgroup; None for the node
    incarnation: int
    spec: PsiTrigger
    armed_at: float
    polling: _Polling
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
        synthesize: Callable[[Optional[str]], bool],
    ) -> None:
        """``synthesize(cgroup)``: whether the events of triggers on that cgroup (None: the node)
        are worked out from the counters; False: the trace's ``trigger`` records are all there are."""
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
        incarnation = self._incarnation_of(target)
        trigger = _Trigger(
            fd, target, incarnation, spec, now, self._polling_at_arm(target, spec, incarnation, now)
        )
        self._by_fd[fd] = trigger
        self._schedule(trigger)
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
            self._schedule(trigger)

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
    def _polling_at_arm(
        self, target: Optional[str], spec: PsiTrigger, incarnation: int, now: float
    ) -> _Polling:
        curve = self._curves.curve(target, spec.kind)
        window = spec.window_us / 1e6
        if curve is not None:
            current, earlier = curve.at(now, incarnation), curve.at(now - window, incarnation)
            if current is not None and earlier is not None and current > earlier:
                # The cgroup's polling is running: ticks go on from here, and the new trigger's
                # window, reset at creation to time 0, counts the whole counter for a window.
                return _Polling(tick=now, origin=now, last_change=now, stale_until=now + window)
        return _Polling(tick=None, origin=now, last_change=now)

    def _period(self, trigger: _Trigger) -> float:
        """The kernel's polling period for the trigger's cgroup: its shortest window / 10, + a jiffy."""
        windows = [
            t.spec.window_us
            for t in self._by_fd.values()
            if t.target == trigger.target and t.incarnation == trigger.incarnation and not t.broken
        ]
        return min(windows, default=trigger.spec.window_us) / 1e6 / UPDATES_PER_WINDOW + JIFFY_SEC

    def _schedule(self, trigger: _Trigger) -> None:
        trigger.next_fire = self._next_event(trigger) if self._synthesize(trigger.target) else None
        if trigger.next_fire is not None:
            heapq.heappush(self._heap, (trigger.next_fire, trigger.fd))

    def _next_event(self, trigger: _Trigger) -> Optional[float]:
        """The tick of the trigger's next event (see the module docstring); its polling state is
        left as of that event. None: no event within the trace."""
        curve = self._curves.curve(trigger.target, trigger.spec.kind)
        if curve is None:
            return None
        incarnation = trigger.incarnation
        end = curve.last_time(incarnation)
        if end is None:
            return None
        window = trigger.spec.window_us / 1e6
        stall = float(trigger.spec.stall_us)
        period = self._period(trigger)
        state = trigger.polling

        def at(t: float) -> float:
            value = curve.at(t, incarnation)
            return 0.0 if value is None else value

        while True:
            if state.tick is None:
                # Not polling: the next stall starts it a jiffy later, with the window reset there.
                rise = curve.next_rise(state.last_change, incarnation)
                if rise is None or rise >= end:
                    return None
                begin = max(rise, trigger.armed_at) + JIFFY_SEC
                state = _Polling(tick=begin, origin=begin, last_change=begin, last_event=state.last_event)
                trigger.polling = state
                continue
            tick = state.tick + period
            if tick > end:
                return None  # the counter is held after the last sample: no new stall
            value, previous = at(tick), at(state.tick)
            state.tick = tick
            if value > previous:
                state.last_change = tick
                stale = state.stale_until is not None and tick < state.stale_until
                growth = value - (0.0 if stale else at(max(tick - window, state.origin)))
                if growth >= stall and (state.last_event is None or tick >= state.last_event + window):
                    state.last_event = tick
                    return tick
            elif tick > state.last_change + window:
                # No stall for a window: the kernel stops polling; the next stall after here restarts it.
                state.tick, state.last_change = None, tick


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
