"""``remediator record``'s PSI triggers: the daemon's own, armed beside the samples.

The daemon acts on the kernel's trigger events, not on sampled counters: an
event confirmed by a few milliseconds of stall over the threshold, or one at
the end of an episode, cannot be worked out from samples a second apart. So
``record`` arms the triggers the daemon would arm (``daemon.discovery``: the
enabled policies' ``trigger`` on each recorded cgroup they select, the node
policies' on ``/proc/pressure/memory``) through the daemon's own ``Watcher``
and ``kernel.psi_trigger``, and writes a ``trigger`` record each time one
fires, stamped on the samples' monotonic clock when ``poll()`` returned, then
reads the node and the cgroup it fired on at once, as the daemon reads a
target at its event, and again the policy's ``verify_sec`` later, where the
daemon looks again after acting on an event.

It degrades as the daemon does. Where the trigger strings may not be written
at all (``Capabilities.triggers_may_be_armed``: a copied tree, a kernel that
refused the probe) nothing is armed; where the kernel refuses one trigger
(a window it does not accept, no privilege) that target is only sampled.
Either is said on stderr and in the header's ``triggers`` field, so a replay
works out the events of those targets from the samples and takes the others
from the trace alone.
"""

from __future__ import annotations

import heapq
import os
import select
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Set, TextIO, Tuple

from remediator.clock import Clock
from remediator.core.state import TargetKey
from remediator.daemon.discovery import desired_targets
from remediator.daemon.watcher import (
    ArmTrigger,
    CloseFd,
    Fired,
    Gone,
    PollFactory,
    WatchChange,
    Watcher,
    Woken,
)
from remediator.errors import KernelError
from remediator.kernel.capabilities import Capabilities
from remediator.kernel.psi_trigger import PsiTrigger
from remediator.kernel.roots import KernelRoots
from remediator.policy.compiled import Policy
from remediator.trace.format import TargetTrigger, TraceTriggers
from remediator.trace.writer import TraceWriter

# The watcher's sampling interval: never used, a refused target is dropped from it (the
# recorder samples every target at its own interval).
_UNUSED_SAMPLING_SEC = 3600.0


class Waiter(Protocol):
    def wait(self, seconds: float) -> None:
        """Return after ``seconds``, or earlier when a stop signal arrived."""


@dataclass(frozen=True)
class TriggerKernel:
    """How triggers are armed and polled: the kernel's by default; tests script them."""

    arm: Optional[ArmTrigger] = None  # None: kernel.psi_trigger.arm_trigger
    poll_factory: PollFactory = select.poll
    close_fd: CloseFd = os.close
    # None: the capabilities decide (Capabilities.triggers_may_be_armed), as for the daemon.
    may_arm: Optional[bool] = None


KERNEL_TRIGGERS = TriggerKernel()


def spec_text(spec: PsiTrigger) -> str:
    return f"{spec.kind} {spec.stall_us} {spec.window_us}"


def _where(key: TargetKey) -> str:
    return key.cgroup if key.cgroup is not None else "the node"


def not_armed_reason(caps: Capabilities) -> str:
    """Why the trigger strings may not be written here (Capabilities.triggers_may_be_armed false)."""
    if caps.trigger is None:
        return f"PSI triggers were not probed ({caps.trigger_not_probed_reason})"
    if not caps.trigger.accepted:
        return f"PSI triggers are refused ({caps.trigger.reason})"
    return f"{caps.cgroup_root} is not a cgroup2 mount (a copy is never written to)"


class TriggerRecorder:
    """Arms the policies' triggers on what is recorded and writes their events; see the module
    docstring. ``wait`` is the record loop's wait while it is armed."""

    def __init__(
        self,
        roots: KernelRoots,
        policies: Sequence[Policy],
        clock: Clock,
        caps: Capabilities,
        err: TextIO,
        inner: Waiter,
        wakeup_fd: Optional[int] = None,
        kernel: TriggerKernel = KERNEL_TRIGGERS,
    ) -> None:
        self._roots = roots
        self._policies = list(policies)
        self._clock = clock
        self._err = err
        self._inner = inner
        may_arm = kernel.may_arm if kernel.may_arm is not None else caps.triggers_may_be_armed
        self.not_armed = "" if may_arm else not_armed_reason(caps)
        self._watcher = Watcher(
            roots,
            clock,
            _UNUSED_SAMPLING_SEC,
            arm=kernel.arm,
            poll_factory=kernel.poll_factory,
            use_triggers=may_arm,
            close_fd=kernel.close_fd,
        )
        if wakeup_fd is not None and clock.passes_while_waiting:
            self._watcher.add_wakeup_fd(wakeup_fd)
        self._refused: Dict[TargetKey, str] = {}
        self._said: Set[Tuple[str, str]] = set()
        self._writer: Optional[TraceWriter] = None
        # Reads the node and these cgroups (None: the node only) now: at an event, and at the
        # look the daemon takes verify_sec after acting on it.
        self.on_read: Optional[Callable[[Set[Optional[str]]], None]] = None
        self._verify_sec = {policy.name: policy.verify_sec for policy in self._policies}
        self._looks: List[Tuple[float, str]] = []  # a heap of (when, cgroup or "" for the node)
        # What is said before the recording's first line is held until it (say_pending).
        self._pending: Optional[List[str]] = []
        self.events = 0
        if not may_arm:
            self._say(
                f"remediator: record: no PSI trigger armed: {self.not_armed}; sampling only, as the daemon "
                "would (a replay works the trigger events out from the samples)\n"
            )

    # ---- arming ------------------------------------------------------------
    def sync(self, recorded: Optional[Sequence[str]]) -> None:
        """Arm what the policies select among ``recorded`` (None: the walk failed; keep what is
        armed), and the node policies' triggers; disarm what is no longer recorded."""
        if recorded is None:
            return
        try:
            desired = desired_targets(self._roots, self._policies)
        except KernelError:
            return  # a partial walk would look like cgroups disappearing (the daemon keeps its targets)
        chosen = set(recorded)
        wanted = {
            key: spec
            for key, spec in desired.items()
            if (key.cgroup is None or key.cgroup in chosen) and key not in self._refused
        }
        for change in self._watcher.sync(wanted):
            self._report(change)

    def _report(self, change: WatchChange) -> None:
        if change.kind not in ("fallback", "sampling"):
            return
        key = change.key
        reason = change.reason or self.not_armed
        self._refused[key] = reason
        self._watcher.drop(key)  # sampled by the recorder anyway: no timer of the watcher's
        if change.kind == "fallback" and (key.policy, change.errno_name or reason) not in self._said:
            self._said.add((key.policy, change.errno_name or reason))
            self._say(
                f"remediator: record: policy {key.policy}: {reason} on {_where(key)}; its pressure is "
                "only sampled there, as the daemon would sample it\n"
            )

    def _say(self, line: str) -> None:
        if self._pending is not None:
            self._pending.append(line)
        else:
            self._err.write(line)

    def say_pending(self) -> None:
        """Say what arming found before the recording started, and from now on at once."""
        for line in self._pending or ():
            self._err.write(line)
        self._pending = None

    def header_field(self) -> TraceTriggers:
        """What is armed now (call after the first ``sync``): the header's ``triggers``."""
        specs = {policy.name: spec_text(policy.trigger.psi) for policy in self._policies}
        targets: List[TargetTrigger] = []
        for key in self._watcher.keys():  # noqa: SIM118 - a method, not a dict
            targets.append(TargetTrigger(key.policy, key.cgroup, specs.get(key.policy, ""), armed=True))
        for key, reason in self._refused.items():
            targets.append(TargetTrigger(key.policy, key.cgroup, specs.get(key.policy, ""), False, reason))
        targets.sort(key=lambda t: (t.cgroup is not None, t.cgroup or "", t.policy))
        return TraceTriggers(targets=tuple(targets), armed_later=not self.not_armed)

    @property
    def armed(self) -> int:
        return self._watcher.stats().armed

    def attach(self, writer: TraceWriter) -> None:
        self._writer = writer

    # ---- waiting -----------------------------------------------------------
    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for trigger events, writing each; return early on a stop signal
        (the wakeup fd), after an event or a look's read (the record loop calls again until its slot).

        At an event the node and the cgroup it fired on are read at once, as the daemon reads a
        target at its event, and again ``verify_sec`` (the policy's) later, where the daemon looks
        again after acting on it: a replay's looks there then read counters measured there, not a
        line between samples a second apart (tests/vm/test_vm_replay.py)."""
        start = self._clock.monotonic()
        until = start + max(0.0, seconds)
        if self._looks:
            until = min(until, self._looks[0][0])
        if self._clock.passes_while_waiting:
            events = self._watcher.wait(until)
        else:
            # A simulated clock does not move in poll(): the inner waiter moves it (tests).
            self._inner.wait(until - start)
            events = self._watcher.wait(None)
        now = self._clock.monotonic()
        reads: Set[Optional[str]] = set()
        for event in events:
            if isinstance(event, Fired) and self._writer is not None:
                self._writer.trigger(now, event.key.cgroup, event.key.policy)
                self.events += 1
                reads.add(event.key.cgroup)
                look = now + self._verify_sec.get(event.key.policy, 0.0)
                heapq.heappush(self._looks, (look, event.key.cgroup or ""))
            elif isinstance(event, (Gone, Woken)):
                pass  # Gone: the cgroup went (its fd is closed); Woken: the loop looks at its stop flag
        while self._looks and self._looks[0][0] <= now:
            reads.add(heapq.heappop(self._looks)[1] or None)
        if reads and self._writer is not None:
            if self.on_read is not None:
                self.on_read(reads)
            self._writer.flush()

    def close(self) -> None:
        self._watcher.close()


__all__ = ["KERNEL_TRIGGERS", "TriggerKernel", "TriggerRecorder", "Waiter", "not_armed_reason", "spec_text"]
