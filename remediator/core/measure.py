"""Step 1 of ``remediator.core.decide``: what one observation says about stall.

Pure: the previous look's totals and the new snapshot in, a ``Measurement`` out.
A fired observation is judged by the stall the kernel's trigger can have counted
(``window_stall_bound_us``), a timed one by its rate over the interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from remediator.core.state import Observation, TargetState
from remediator.core.wording import format_share
from remediator.policy.compiled import TriggerSpec


@dataclass(frozen=True)
class Measurement:
    """What one observation says about stall, relative to the previous one."""

    total_us: int
    delta_us: Optional[int]  # None: no usable baseline (first observation, counter reset)
    interval_sec: float
    stall_rate: Optional[float]  # share of wall time stalled over the interval; None if interval <= 0
    pressured: Optional[bool]  # None: no information (baseline, unconfirmed event, zero interval)
    fired: bool = False  # judged as a kernel trigger event (delta >= stall_us), not as a rate
    # A fired event: the stall the kernel can have counted for it (from our looks, see
    # window_stall_bound_us) and over how many seconds back that figure reaches.
    event_stall_us: Optional[int] = None
    event_span_sec: Optional[float] = None

    @property
    def pressure_rate(self) -> Optional[float]:
        """The stall rate this look shows: for a fired event the stall the kernel counted for it over
        its span (the interval since the last look can be milliseconds), else over the interval."""
        if self.fired and self.event_stall_us is not None and self.event_span_sec:
            return self.event_stall_us / (self.event_span_sec * 1e6)
        return self.stall_rate


def measure(trigger: TriggerSpec, target: TargetState, obs: Observation, now: float) -> Measurement:
    """Step 1 of the module docstring."""
    line = obs.snapshot.pressure.line(trigger.kind)
    total = line.total_us if line is not None else 0
    if target.last_total_us is None or target.last_at is None or total < target.last_total_us:
        # No baseline yet, or the counter went backwards (the cgroup was recreated).
        return Measurement(total, None, 0.0, None, None)
    delta = total - target.last_total_us
    interval = now - target.last_at
    rate = delta / (interval * 1e6) if interval > 0 else None
    pressured: Optional[bool]
    if obs.fired:
        event_stall_us, since = window_stall_bound_us(trigger, target, total, now)
        pressured = True if event_stall_us >= trigger.stall_us else None
        return Measurement(
            total,
            delta,
            interval,
            rate,
            pressured,
            True,
            event_stall_us,
            None if since is None else now - since,
        )
    pressured = None if rate is None else rate >= trigger.threshold_fraction
    return Measurement(total, delta, interval, rate, pressured)


# How many trigger windows back the kernel's trigger growth reaches (the current one + the previous).
KERNEL_HISTORY_WINDOWS = 2


def window_stall_bound_us(
    trigger: TriggerSpec, target: TargetState, total_us: int, now: float
) -> Tuple[int, Optional[float]]:
    """The most stall the kernel's trigger can have counted for an event now, from our own looks,
    and the time of the look it is counted from (None: no look to count from, stall 0).

    The kernel's growth is the stall since its window began (at most one window ago) plus a share
    of the previous window's growth (kernel/sched/psi.c window_update), so it counts stall from
    as far back as two windows. The newest look at or before ``now - 2 x window`` (else the oldest
    we have: the baseline taken when the trigger was armed, before which it saw nothing) bounds
    that from below. An event whose bound is under stall_us cannot be the kernel's threshold
    crossing (spurious, e.g. right after arming). Measuring only since the last look rejected real
    events whose window began before a recent look: the daemon acted one window late.
    """
    window_start = now - KERNEL_HISTORY_WINDOWS * trigger.window_us / 1e6
    looks = target.recent_looks or (
        ((target.last_at, target.last_total_us),)
        if target.last_at is not None and target.last_total_us is not None
        else ()
    )
    base: Optional[Tuple[float, int]] = None
    for at, total in looks:  # oldest first
        if base is None or at <= window_start:
            base = (at, total)
    return (total_us - base[1], base[0]) if base is not None else (0, None)


def remember_look(
    trigger: TriggerSpec, looks: Tuple[Tuple[float, int], ...], now: float, total_us: int
) -> Tuple[Tuple[float, int], ...]:
    """``looks`` plus this one, pruned to what ``window_stall_bound_us`` can still use."""
    window_start = now - KERNEL_HISTORY_WINDOWS * trigger.window_us / 1e6
    kept = (*looks, (now, total_us))
    older = [i for i, (at, _) in enumerate(kept) if at <= window_start]
    return kept[older[-1] :] if older else kept


def stall_text(trigger: TriggerSpec, m: Measurement) -> str:
    """The measured stall vs the policy's threshold, for messages."""
    threshold = format_share(trigger.threshold_fraction)
    if m.delta_us is None or m.stall_rate is None:
        return f"{trigger.kind} stall unknown (threshold {threshold})"
    if m.fired and m.event_stall_us is not None and m.event_span_sec is not None:
        # The figure the event was confirmed by, in the trigger's own terms (stall within a span
        # of windows): the stall since the last look alone can be below the threshold the kernel
        # crossed (a window that began before a recent look), and an average over a long gap
        # understates it.
        return (
            f"PSI trigger fired: {trigger.kind} stall {m.event_stall_us / 1000:.0f} ms within the last "
            f"{m.event_span_sec * 1000:.0f} ms (trigger: {trigger.stall_us // 1000} ms within "
            f"{trigger.window_us // 1000} ms)"
        )
    return (
        f"{trigger.kind} stall {m.delta_us / 1000:.0f} ms in the last {m.interval_sec:.1f} s = "
        f"{format_share(m.stall_rate)} (threshold {threshold} = {trigger.stall_us} us per "
        f"{trigger.window_us} us)"
    )
