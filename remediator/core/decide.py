"""The decision core: policy + previous state + one observation + ``now`` -> a Decision.

Sans-I/O in the h11 style: no reads, no writes, no clock, no logging. The
watcher calls ``decide`` for every observation of a target, hands the actions
to the executor, reports each outcome back through ``note_outcome``, and
observes the target again (``fired=False``) no later than ``wakeup_at``.

Records and actions
    ``Decision.records`` are complete records to journal as they are
    (PRESSURE_CONFIRMED, ACTION_DECLINED, ESCALATED). Every action carries its
    own ``cause`` record (ACTION_APPLIED, STOOD_BACK, BACKED_OFF, ROLLED_BACK):
    the executor fills in result/before/after (and "would" in dry-run) and
    journals it, so it is NOT repeated in ``records``.

The behaviour, step by step (this is the product's behaviour; tests pin it):

1. Measure. The stall is the ``trigger.kind`` line of the snapshot's pressure
   (no ``full`` line: no stall). The first observation of a target only sets
   the baseline: an event right after arming a trigger can be spurious. A
   fired observation is pressured if the stall the kernel's trigger can have
   counted, by our own looks, is >= stall_us: ``total`` less the total at the
   newest look at or before now - 2 x window (the kernel adds a share of the
   previous window's growth), else at the oldest look remembered; if not it is
   unconfirmed: no record and no effect except moving the baseline. A timed
   observation is pressured if the stall rate ``delta_us / (dt * 1e6)`` is
   >= stall_us / window_us, else calm.
2. Sustained. An episode opens (pressured_since) at the first pressured
   observation and closes at the first calm one (calm_since starts). The core
   acts once it lasted sustained_sec, emitting one PRESSURE_CONFIRMED per
   episode at that moment.
3. Conditions (policy.conditions, on the fresh snapshot) must hold, else one
   ACTION_DECLINED record saying which one failed (storm limit below).
4. Ladder. With no rung pending, the first rung from the bottom whose
   preconditions hold (``remediator.core.ladder``) and which is not in its
   cooldown, over its max_per_hour (per target per rung, sliding hour) or, for
   node-wide rungs, over ``CoreConfig.node_actions_max_per_hour`` (all
   policies together) is taken. Each rung passed over gets an ACTION_DECLINED
   record. A taken rung is pending until taken_at + verify_sec.
5. Verify and escalate. The first observation at or after the verify time
   judges the rung: still pressured -> ESCALATED and the rungs above are tried
   (none left -> "ladder exhausted", and the next pressure starts at rung 0
   again, subject to cooldowns); calm -> the rung helped, back to rung 0.
   Observations before the verify time never escalate.
6. Other writers. On every observation of a target whose memory.high (or, for
   the owner, vm.vfs_cache_pressure) we own, a value different from ours (from
   the value before our write, in dry-run) means another writer took over:
   STOOD_BACK + ReleaseOwnership, and it is never restored.
7. Back-off. memory.high throttling is itself memory stall: when, verify_sec
   or more after our write, memory.events.local ``high`` grew since the write
   and the stall rate over the whole time since the write is above the rate we
   wrote it at, BACKED_OFF + RestoreMemoryHigh, and memory_high is barred for
   the target until a full calm period (rollback.calm_sec) has passed.
8. Rollback. Calm for rollback.calm_sec -> ROLLED_BACK + restore of every value
   the target owns. Reclaim and drop_caches have nothing to undo.
9. wakeup_at is the earliest of: the pending rung's verify time, the sustained
   deadline, the rollback deadline (calm_since + calm_sec while owning), the
   end of a cooldown/hourly limit while an acting episode waits for it, and,
   while an episode is open (or we own something and calm has not started),
   a re-check after verify_sec: pressure that ends produces no kernel event,
   so only a timed look can see the episode close and the rollback start.
   None when nothing is pending: an idle target costs nothing. While a
   reclaim follow-up period runs (step 10), also now + follow_up.every_sec;
   after an unconfirmed trigger event, now + a quarter of the trigger window
   (the kernel may have counted old stall while the new stall is only starting).
10. Follow-up. When a reclaim rung whose spec has ``follow_up`` is judged
   helpful (calm at its verify time) and was taken for a pressure, a
   follow-up period of follow_up.for_sec starts. On every calm look within
   it, with no rung pending, memory.current >= min_usage_fraction_of_max x
   memory.max, the policy's conditions holding and the rung's limits allowing,
   the rung is taken again (ACTION_APPLIED with FOLLOW_UP=1, pending like any
   rung: pressure at its verify time escalates). A cache that refills in
   seconds is reclaimed before it stalls the cgroup again, instead of after
   every refill's first window of stall. Only a pressure relieved by reclaim
   starts or extends a period, so proactive reclaim stops for_sec after the
   last proof of need; a follow-up that wrote nothing (dry-run, refused,
   failed) ends the period.

ACTION_DECLINED records are limited to one per target per reason per
``DECLINE_RECORD_INTERVAL_SEC``, so a pressured cgroup does not flood the journal.
Each carries ``REASON`` (a fixed set of labels) and ``REASON_KEY`` (the stable
key it was limited by): ``core/reasons.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Mapping, Optional, Tuple

from remediator.core.actions import (
    Action,
    Reclaim,
    ReleaseOwnership,
    RestoreMemoryHigh,
    RestoreSysctl,
    SetMemoryHigh,
    SetSysctl,
)
from remediator.core.ladder import (
    VFS_CACHE_PRESSURE,
    RungContext,
    RungDecline,
    RungTake,
    describe_target,
    evaluate_rung,
    failed_condition,
    format_share,
)
from remediator.core.reasons import reason_fields
from remediator.core.state import (
    ChangedValue,
    CoreConfig,
    CoreState,
    NodeState,
    Observation,
    PendingRung,
    ProposedSysctl,
    ProposedWrite,
    TargetKey,
    TargetState,
    initial_state,
)
from remediator.diagnosis.composition import compose
from remediator.policy.compiled import (
    NODE_WIDE_KINDS,
    ActionSpec,
    Policy,
    ReclaimAction,
    ReclaimFollowUp,
    TriggerSpec,
)
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import Knob, Record, RecordType, evidence_from
from remediator.sizes import format_bytes

__all__ = [
    "DECLINE_RECORD_INTERVAL_SEC",
    "CoreConfig",
    "CoreState",
    "Decision",
    "Measurement",
    "Observation",
    "TargetKey",
    "decide",
    "forget",
    "initial_state",
    "measure",
    "note_outcome",
    "on_exit",
]

HOUR_SEC = 3600.0
DECLINE_RECORD_INTERVAL_SEC = 60.0
# Floor for the re-check interval of an open episode, so a policy with a
# tiny verify_sec cannot make the watcher spin.
MIN_RECHECK_SEC = 1.0
# After an unconfirmed trigger event, look again after this share of the trigger's window. The
# kernel raises an event on the stall since its window began, which after an idle spell can be the
# tail of an episode long gone; the new stall may only be starting, and the kernel's next event
# comes a whole window later (one per window). Measured: 1 of 30 reactions a window (2.08 s) late.
UNCONFIRMED_RECHECK_WINDOW_SHARE = 0.25
MEMORY_HIGH_FILE = "memory.high"

# Executor outcomes that mean the value is now (or, in dry-run, would be) in the kernel.
_WRITTEN = frozenset({"applied", "partial"})
# Extra record field (REMEDIATOR_FOLLOW_UP=1) on a reclaim taken as a follow-up, not for a pressure.
FOLLOW_UP_FIELD = "FOLLOW_UP"
_SIMULATED = "would"
# A failed restore leaves the value ours: asked again at the next calm observation.
_RESTORE_RETRY = "failed"


@dataclass(frozen=True)
class Decision:
    state: CoreState
    actions: Tuple[Action, ...]
    records: Tuple[Record, ...]
    # When the caller must observe this target again (fired=False); None = only on kernel events.
    wakeup_at: Optional[float]


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


class _Turn:
    """One decision in progress. Rebinds (never mutates) immutable state values."""

    def __init__(
        self, policy: Policy, state: CoreState, obs: Observation, now: float, config: CoreConfig
    ) -> None:
        self.policy = policy
        self.state = state
        self.obs = obs
        self.key = obs.key
        self.now = now
        self.config = config
        previous = state.target(obs.key)
        self.m = measure(policy.trigger, previous, obs, now)
        # A new baseline (first look, counter reset) starts the history afresh.
        looks = previous.recent_looks if self.m.delta_us is not None else ()
        self.target = replace(
            previous,
            last_total_us=self.m.total_us,
            last_at=now,
            recent_looks=remember_look(policy.trigger, looks, now, self.m.total_us),
            last_snapshot=obs.snapshot,
        )
        self.node: NodeState = state.node
        self.evidence = evidence_from(obs.snapshot, self.m.delta_us)
        self.actions: List[Action] = []
        self.records: List[Record] = []
        self._context: Optional[RungContext] = None

    # ------------------------------------------------------------ helpers

    @property
    def node_readings(self) -> Optional[NodeSnapshot]:
        if self.obs.node is not None:
            return self.obs.node
        return self.obs.snapshot if isinstance(self.obs.snapshot, NodeSnapshot) else None

    @property
    def where(self) -> str:
        return describe_target(self.key.cgroup)

    def _record(self, record_type: RecordType, message: str, action: Optional[Knob] = None) -> Record:
        return Record(
            type=record_type,
            message=message,
            policy=self.policy.name,
            cgroup=self.key.cgroup,
            action=action,
            evidence=self.evidence,
        )

    def _decline(
        self, reason: str, message: str, action: Optional[Knob] = None, rung: Optional[int] = None
    ) -> None:
        last = self.target.declined_at.get(reason)
        if last is not None and self.now - last < DECLINE_RECORD_INTERVAL_SEC:
            return
        self.target = self.target.with_declined(reason, self.now, DECLINE_RECORD_INTERVAL_SEC)
        extra = reason_fields(reason)
        if rung is not None:
            extra["RUNG"] = str(rung)
        self.records.append(
            Record(
                type=RecordType.ACTION_DECLINED,
                message=message,
                policy=self.policy.name,
                cgroup=self.key.cgroup,
                action=action,
                result="declined",
                evidence=self.evidence,
                extra=extra,
            )
        )

    def _owns_vfs(self) -> bool:
        return self.node.vfs_owner == self.key and self.node.vfs_cache_pressure is not None

    def _rung_context(self) -> RungContext:
        if self._context is None:
            snapshot = self.obs.snapshot
            composition = compose(snapshot, self.obs.node) if isinstance(snapshot, CgroupSnapshot) else None
            owner = self.node.vfs_owner
            self._context = RungContext(
                policy=self.policy,
                key=self.key,
                snapshot=snapshot,
                node=self.node_readings,
                composition=composition,
                reclaim_supported=self.obs.reclaim_supported,
                evidence=self.evidence,
                stall_text=stall_text(self.policy.trigger, self.m),
                owned_memory_high=self.target.memory_high,
                memory_high_barred=self.target.memory_high_barred,
                owned_vfs=self.node.vfs_cache_pressure if self._owns_vfs() else None,
                vfs_owned_elsewhere=owner if owner is not None and owner != self.key else None,
            )
        return self._context

    # ------------------------------------------------------------ the turn

    def run(self) -> None:
        self._restore_orphaned_vfs()
        if self.m.delta_us is None:
            return  # baseline only
        self._check_other_writers()
        self._check_self_throttling()
        self._expire_follow_up()
        if self.m.pressured is True:
            self._on_pressure()
        elif self.m.pressured is False:
            self._on_calm()
            self._follow_up()

    def _restore_orphaned_vfs(self) -> None:
        """vm.vfs_cache_pressure raised for a cgroup that is gone (forgotten) has nobody
        left to roll it back when calm returns: restore it now rather than leave the node changed."""
        owner = self.node.vfs_owner
        owned = self.node.vfs_cache_pressure
        if owner is None or owned is None or owned.restore_requested:
            return
        if owner == self.key or owner in self.state.targets:
            return
        node = self.node_readings
        cause = Record(
            type=RecordType.ROLLED_BACK,
            message=(
                f"restore vm.vfs_cache_pressure to {owned.before} (ours: {owned.ours}): "
                f"{describe_target(owner.cgroup)}, whose pressure raised it, is gone"
            ),
            policy=owner.policy,
            cgroup=owner.cgroup,
            action=VFS_CACHE_PRESSURE,
            evidence=evidence_from(node) if node is not None else {},
        )
        self.actions.append(RestoreSysctl(name=VFS_CACHE_PRESSURE, ours=owned.ours, cause=cause))
        self.node = replace(self.node, vfs_cache_pressure=replace(owned, restore_requested=True))

    def _check_other_writers(self) -> None:
        snapshot = self.obs.snapshot
        owned = self.target.memory_high
        if (
            owned is not None
            and not owned.restore_requested
            and isinstance(snapshot, CgroupSnapshot)
            and snapshot.high_bytes != owned.expected
        ):
            cause = self._record(
                RecordType.STOOD_BACK,
                f"memory.high of {self.where} changed from {format_bytes(owned.expected)} to "
                f"{format_bytes(snapshot.high_bytes)} by another writer; releasing it, not restoring",
                Knob.MEMORY_HIGH,
            )
            self.actions.append(ReleaseOwnership(cgroup=snapshot.cgroup, file=MEMORY_HIGH_FILE, cause=cause))
            self.target = replace(self.target, memory_high=None, proposed_memory_high=None)
        vfs = self.node.vfs_cache_pressure
        node = self.node_readings
        if (
            self._owns_vfs()
            and vfs is not None
            and not vfs.restore_requested
            and node is not None
            and node.vfs_cache_pressure is not None
            and node.vfs_cache_pressure != vfs.expected
        ):
            cause = self._record(
                RecordType.STOOD_BACK,
                f"vm.vfs_cache_pressure changed from {vfs.expected} to {node.vfs_cache_pressure} "
                "by another writer; releasing it, not restoring",
                VFS_CACHE_PRESSURE,
            )
            self.actions.append(ReleaseOwnership(cgroup=None, file=VFS_CACHE_PRESSURE, cause=cause))
            self.node = replace(self.node, vfs_owner=None, vfs_cache_pressure=None, proposed_vfs=None)

    def _check_self_throttling(self) -> None:
        snapshot = self.obs.snapshot
        owned = self.target.memory_high
        if owned is None or owned.restore_requested or owned.events_high_at_write is None:
            return
        if owned.stall_baseline is None or not isinstance(snapshot, CgroupSnapshot):
            return
        # Judged like the rung (at its verify time) and over all of the time since: an observation
        # moments after the write (a trigger event right behind it) has an interval of milliseconds
        # whose rate says nothing, and backing off on it undid good clamps (the packaging VM test).
        decided_at, total_then = owned.stall_baseline
        since = self.now - decided_at
        stalled_us = self.m.total_us - total_then
        if since < self.policy.verify_sec or since <= 0 or stalled_us < 0:
            return
        rate = stalled_us / (since * 1e6)
        # The cgroup's own counter: a child breaching its own memory.high is not our clamp throttling.
        if snapshot.own_high_events <= owned.events_high_at_write or rate <= owned.stall_rate_at_write:
            return
        cause = self._record(
            RecordType.BACKED_OFF,
            # A lower-case verb phrase: the executor prefixes "would " in dry-run.
            f"restore memory.high of {self.where} to {format_bytes(owned.before)}: our "
            f"{format_bytes(owned.ours)} is throttling it (memory.events.local high rose from "
            f"{owned.events_high_at_write} to {snapshot.own_high_events} and the stall rate from "
            f"{format_share(owned.stall_rate_at_write)} to {format_share(rate)} since it was set); "
            f"not lowering memory.high again before {self.policy.rollback.calm_sec:g} s of calm",
            Knob.MEMORY_HIGH,
        )
        self.actions.append(RestoreMemoryHigh(cgroup=snapshot.cgroup, ours=owned.ours, cause=cause))
        self.target = replace(
            self.target, memory_high=replace(owned, restore_requested=True), memory_high_barred=True
        )

    def _calm_lasted(self) -> bool:
        calm_since = self.target.calm_since
        return calm_since is not None and self.now - calm_since >= self.policy.rollback.calm_sec

    def _on_pressure(self) -> None:
        # A trigger fires only under pressure: when calm began long enough ago and
        # this is the first pressure since, the calm period was complete.
        if self.target.memory_high_barred and self._calm_lasted():
            self.target = replace(self.target, memory_high_barred=False)
        pressured_since = self.target.pressured_since if self.target.pressured_since is not None else self.now
        self.target = replace(self.target, pressured_since=pressured_since, calm_since=None)
        rung = self.target.rung
        if rung is not None:
            if self.now >= rung.taken_at + self.policy.verify_sec:
                self._escalate(rung)
            return
        if not self.policy.enabled:
            return
        if self.now - pressured_since < self.policy.trigger.sustained_sec:
            return
        self._confirm()
        if self._conditions_hold():
            self._climb(0)

    def _on_calm(self) -> None:
        calm_since = self.target.calm_since if self.target.calm_since is not None else self.now
        self.target = replace(
            self.target, pressured_since=None, confirmed_recorded=False, calm_since=calm_since
        )
        rung = self.target.rung
        if rung is not None and self.now >= rung.taken_at + self.policy.verify_sec:
            # The rung helped: the next pressure starts again at the bottom.
            self.target = replace(self.target, rung=None)
            found = follow_up_rung(self.policy)
            if not rung.follow_up and found is not None and found[0] == rung.index:
                # A reclaim relieved this pressure: follow up as the cache refills (step 10).
                self.target = replace(self.target, follow_up_since=self.now)
        if self._calm_lasted():
            self.target = replace(self.target, memory_high_barred=False)
            self._roll_back()

    def _expire_follow_up(self) -> None:
        since = self.target.follow_up_since
        found = follow_up_rung(self.policy)
        if since is not None and (found is None or self.now - since >= found[2].for_sec):
            self.target = replace(self.target, follow_up_since=None)

    def _follow_up(self) -> None:
        """Step 10 of the module docstring: reclaim again on a calm look once usage nears memory.max."""
        since = self.target.follow_up_since
        found = follow_up_rung(self.policy)
        snapshot = self.obs.snapshot
        if since is None or found is None or self.target.rung is not None or not self.policy.enabled:
            return
        if not isinstance(snapshot, CgroupSnapshot) or not snapshot.max_bytes:
            return
        index, spec, follow = found
        usage = snapshot.current_bytes / snapshot.max_bytes
        if usage < follow.min_usage_fraction_of_max:
            return
        # Routine "not now" answers (conditions, cooldown, too little cache) are not recorded:
        # a follow-up is an offer made every every_sec, not a decision about a pressure.
        ctx = self._rung_context()
        if failed_condition(self.policy.conditions, snapshot, ctx.composition, ctx.owned_memory_high):
            return
        if self._limit_blocking(index, spec) is not None:
            return
        outcome = evaluate_rung(spec, index, ctx)
        if not isinstance(outcome, RungTake) or not isinstance(outcome.action, Reclaim):
            return
        action = outcome.action
        cause = replace(
            action.cause,
            message=(
                f"follow-up {self.now - since:.0f} s into the {follow.for_sec:g} s after a pressure reclaim "
                f"relieved: usage {format_bytes(snapshot.current_bytes)} is {format_share(usage)} of "
                f"memory.max (follow_up at {format_share(follow.min_usage_fraction_of_max)}); "
                + action.cause.message
            ),
            extra={**action.cause.extra, FOLLOW_UP_FIELD: "1"},
        )
        self._take(index, spec, replace(action, cause=cause), follow_up=True)

    def _confirm(self) -> None:
        if self.target.confirmed_recorded:
            return
        since = self.target.pressured_since if self.target.pressured_since is not None else self.now
        self.records.append(
            self._record(
                RecordType.PRESSURE_CONFIRMED,
                f"memory pressure on {self.where} for {self.now - since:.0f} s "
                f"(sustained_sec {self.policy.trigger.sustained_sec:g}): "
                f"{stall_text(self.policy.trigger, self.m)}",
            )
        )
        self.target = replace(self.target, confirmed_recorded=True)

    def _conditions_hold(self) -> bool:
        ctx = self._rung_context()
        failed = failed_condition(
            self.policy.conditions, self.obs.snapshot, ctx.composition, ctx.owned_memory_high
        )
        if failed is None:
            return True
        reason, message = failed
        self._decline(f"condition:{reason}", message)
        return False

    def _escalate(self, rung: PendingRung) -> None:
        self.target = replace(self.target, rung=None)
        if not self.policy.enabled:
            return
        self._confirm()
        if not self._conditions_hold():
            return
        before = format_share(rung.stall_rate)
        self.records.append(
            self._record(
                RecordType.ESCALATED,
                f"pressure did not fall within verify_sec ({self.policy.verify_sec:g} s) after {rung.kind} "
                f"(rung {rung.index}) on {self.where}: {stall_text(self.policy.trigger, self.m)}, "
                f"{before} when it was taken",
                rung.kind,
            )
        )
        if not self._climb(rung.index + 1):
            self._decline(
                "ladder_exhausted",
                f"ladder exhausted on {self.where}: no rung above {rung.kind} (rung {rung.index}) can be "
                "taken; starting again from rung 0 at the next pressure",
            )

    def _climb(self, start: int) -> bool:
        """Take the first eligible rung from ``start`` up; True if one was taken."""
        ladder = self.policy.ladder
        for index in range(start, len(ladder)):
            spec = ladder[index]
            outcome = evaluate_rung(spec, index, self._rung_context())
            if isinstance(outcome, RungDecline):
                self._decline(f"rung{index}:{outcome.reason}", outcome.message, spec.kind, index)
                continue
            blocked = self._limit_blocking(index, spec)
            if blocked is not None:
                reason, message = blocked
                self._decline(f"rung{index}:{reason}", message, spec.kind, index)
                continue
            self._take(index, spec, outcome.action)
            return True
        return False

    def _limit_blocking(self, index: int, spec: ActionSpec) -> Optional[Tuple[str, str]]:
        limits = spec.limits
        times = _recent(self.target.rung_taken_at.get(index, ()), self.now)
        if times and self.now - times[-1] < limits.cooldown_sec:
            left = times[-1] + limits.cooldown_sec - self.now
            return (
                "cooldown",
                f"{spec.kind} on {self.where} is in its cooldown "
                f"({limits.cooldown_sec:g} s, {left:.0f} s left)",
            )
        if len(times) >= limits.max_per_hour:
            return (
                "max_per_hour",
                f"{spec.kind} on {self.where} was taken {len(times)} times in the last hour "
                f"(max_per_hour {limits.max_per_hour})",
            )
        if spec.kind in NODE_WIDE_KINDS:
            node_times = _recent(self.node.actions_at, self.now)
            if len(node_times) >= self.config.node_actions_max_per_hour:
                return (
                    "node_rate_limit",
                    f"node-wide action rate limit: {len(node_times)} node-wide actions in the last hour "
                    f"across all policies (max {self.config.node_actions_max_per_hour})",
                )
        return None

    def _take(self, index: int, spec: ActionSpec, action: Action, follow_up: bool = False) -> None:
        rate = self.m.stall_rate if self.m.stall_rate is not None else 0.0
        self.actions.append(action)
        target = self.target.with_rung_taken(index, self.now, HOUR_SEC)
        pending = PendingRung(
            index=index, kind=spec.kind, taken_at=self.now, stall_rate=rate, follow_up=follow_up
        )
        target = replace(target, rung=pending)
        if spec.kind in NODE_WIDE_KINDS:
            self.node = replace(self.node, actions_at=(*_recent(self.node.actions_at, self.now), self.now))
        if isinstance(action, SetMemoryHigh) and action.value is not None:
            events_high = (
                self.obs.snapshot.own_high_events if isinstance(self.obs.snapshot, CgroupSnapshot) else 0
            )
            baseline = (self.now, self.m.total_us)
            write = ProposedWrite(action.value, rate, events_high, stall_baseline=baseline)
            target = replace(target, proposed_memory_high=write)
        if (
            isinstance(action, SetSysctl)
            and action.name == VFS_CACHE_PRESSURE
            and action.expected is not None
        ):
            owned = self.node.vfs_cache_pressure if self._owns_vfs() else None
            before = owned.before if owned is not None and owned.before is not None else action.expected
            proposal = ProposedSysctl(
                owner=self.key, write=ProposedWrite(action.value, rate, 0), before=before
            )
            self.node = replace(self.node, proposed_vfs=proposal)
        self.target = target

    def _roll_back(self) -> None:
        calm = f"pressure stayed below the threshold for {self.policy.rollback.calm_sec:g} s"
        owned = self.target.memory_high
        snapshot = self.obs.snapshot
        if owned is not None and not owned.restore_requested and isinstance(snapshot, CgroupSnapshot):
            cause = self._record(
                RecordType.ROLLED_BACK,
                f"restore memory.high of {self.where} to {format_bytes(owned.before)} "
                f"(ours: {format_bytes(owned.ours)}): {calm}",
                Knob.MEMORY_HIGH,
            )
            self.actions.append(RestoreMemoryHigh(cgroup=snapshot.cgroup, ours=owned.ours, cause=cause))
            self.target = replace(self.target, memory_high=replace(owned, restore_requested=True))
        vfs = self.node.vfs_cache_pressure
        if self._owns_vfs() and vfs is not None and not vfs.restore_requested:
            cause = self._record(
                RecordType.ROLLED_BACK,
                f"restore vm.vfs_cache_pressure to {vfs.before} (ours: {vfs.ours}): {calm}",
                VFS_CACHE_PRESSURE,
            )
            self.actions.append(RestoreSysctl(name=VFS_CACHE_PRESSURE, ours=vfs.ours, cause=cause))
            self.node = replace(self.node, vfs_cache_pressure=replace(vfs, restore_requested=True))

    # ------------------------------------------------------------ result

    def _owns_anything(self) -> bool:
        owned = self.target.memory_high
        vfs = self.node.vfs_cache_pressure
        return (owned is not None and not owned.restore_requested) or (
            self._owns_vfs() and vfs is not None and not vfs.restore_requested
        )

    def _wakeup(self) -> Optional[float]:
        """Step 9 of the module docstring."""
        target = self.target
        policy = self.policy
        recheck = self.now + max(policy.verify_sec, MIN_RECHECK_SEC)
        candidates: List[float] = []
        if target.rung is not None:
            candidates.append(target.rung.taken_at + policy.verify_sec)
        elif target.pressured_since is not None:
            sustained_at = target.pressured_since + policy.trigger.sustained_sec
            if self.now < sustained_at:
                candidates.append(sustained_at)
            else:
                candidates.append(recheck)
                candidates.extend(self._limit_expiries())
        if self._owns_anything():
            if target.calm_since is not None:
                candidates.append(target.calm_since + policy.rollback.calm_sec)
            else:
                candidates.append(recheck)
        if self.m.fired and self.m.pressured is None and self.m.delta_us is not None:
            candidates.append(self.now + UNCONFIRMED_RECHECK_WINDOW_SHARE * policy.trigger.window_us / 1e6)
        found = follow_up_rung(policy)
        if target.follow_up_since is not None and found is not None and policy.enabled:
            end = target.follow_up_since + found[2].for_sec
            if self.now < end:
                candidates.append(min(self.now + found[2].every_sec, end))
        return min(candidates) if candidates else None

    def _limit_expiries(self) -> List[float]:
        """When rate limits that currently hold back a rung run out (to retry right then)."""
        expiries: List[float] = []
        node_times = _recent(self.node.actions_at, self.now)
        for index, spec in enumerate(self.policy.ladder):
            times = _recent(self.target.rung_taken_at.get(index, ()), self.now)
            limits = spec.limits
            if times and self.now - times[-1] < limits.cooldown_sec:
                expiries.append(times[-1] + limits.cooldown_sec)
            if 0 < limits.max_per_hour <= len(times):
                expiries.append(times[len(times) - limits.max_per_hour] + HOUR_SEC)
            node_max = self.config.node_actions_max_per_hour
            if spec.kind in NODE_WIDE_KINDS and 0 < node_max <= len(node_times):
                expiries.append(node_times[len(node_times) - node_max] + HOUR_SEC)
        return [t for t in expiries if t > self.now]

    def decision(self) -> Decision:
        state = self.state.with_target(self.key, self.target).with_node(self.node)
        return Decision(
            state=state, actions=tuple(self.actions), records=tuple(self.records), wakeup_at=self._wakeup()
        )


def follow_up_rung(policy: Policy) -> Optional[Tuple[int, ReclaimAction, ReclaimFollowUp]]:
    """The ladder's reclaim rung with a follow_up, if any (a ladder has each kind at most once)."""
    for index, spec in enumerate(policy.ladder):
        if isinstance(spec, ReclaimAction) and spec.follow_up is not None:
            return index, spec, spec.follow_up
    return None


def _recent(times: Tuple[float, ...], now: float) -> Tuple[float, ...]:
    """The times within the sliding hour before ``now``, oldest first."""
    return tuple(t for t in times if t > now - HOUR_SEC)


def decide(policy: Policy, state: CoreState, obs: Observation, now: float, config: CoreConfig) -> Decision:
    """Decide what to do about one observation of ``obs.key`` (see the module docstring).

    ``now`` is monotonic seconds from the injected clock. ``policy`` must be the
    policy named by ``obs.key.policy``. A disabled policy still measures,
    stands back and rolls back, but never takes a rung.
    """
    turn = _Turn(policy, state, obs, now, config)
    turn.run()
    return turn.decision()


def note_outcome(state: CoreState, action: Action, result: str, now: float) -> CoreState:
    """Executor feedback for one action of a Decision.

    ``result`` is one of applied, would (dry-run), partial, declined, failed,
    stood_back, gone, restored, not_restored.

    - SetMemoryHigh / SetSysctl(vfs_cache_pressure): applied or partial (the
      value was written) makes the target own the value; would does the same
      but marks it simulated (the kernel still holds the old value, and the
      other-writer check compares with that). Anything else takes no ownership.
    - RestoreMemoryHigh / RestoreSysctl: drops ownership, except failed (the
      value is still ours, so the restore is asked again at the next calm
      observation that finds the calm period complete).
    - Reclaim, drop_caches, ReleaseOwnership: nothing to remember.
    """
    if isinstance(action, SetMemoryHigh):
        return _note_memory_high_write(state, action, result, now)
    if isinstance(action, RestoreMemoryHigh):
        key = TargetKey(action.cause.policy, action.cgroup)
        target = state.targets.get(key)
        if target is None or target.memory_high is None:
            return state
        owned = target.memory_high
        memory_high = replace(owned, restore_requested=False) if result == _RESTORE_RETRY else None
        return state.with_target(key, replace(target, memory_high=memory_high))
    if (
        isinstance(action, Reclaim)
        and action.cause.extra.get(FOLLOW_UP_FIELD) == "1"
        and result not in _WRITTEN
    ):
        # A follow-up that reclaimed nothing (dry-run's "would", refused, failed) changes nothing the
        # next look could see: asking again every every_sec would only repeat the record.
        key = TargetKey(action.cause.policy, action.cgroup)
        target = state.targets.get(key)
        return state if target is None else state.with_target(key, replace(target, follow_up_since=None))
    if isinstance(action, SetSysctl) and action.name == VFS_CACHE_PRESSURE:
        return _note_vfs_write(state, action, result, now)
    if isinstance(action, RestoreSysctl) and action.name == VFS_CACHE_PRESSURE:
        vfs = state.node.vfs_cache_pressure
        if vfs is None:
            return state
        if result == _RESTORE_RETRY:
            return state.with_node(
                replace(state.node, vfs_cache_pressure=replace(vfs, restore_requested=False))
            )
        return state.with_node(replace(state.node, vfs_owner=None, vfs_cache_pressure=None))
    return state


def _note_memory_high_write(state: CoreState, action: SetMemoryHigh, result: str, now: float) -> CoreState:
    key = TargetKey(action.cause.policy, action.cgroup)
    target = state.targets.get(key)
    if target is None:
        return state
    proposal = target.proposed_memory_high
    target = replace(target, proposed_memory_high=None)
    if action.value is None or not (result in _WRITTEN or result == _SIMULATED):
        return state.with_target(key, target)
    previous = target.memory_high
    owned = ChangedValue(
        ours=action.value,
        # A second, lower write keeps the original of the first one.
        before=previous.before if previous is not None else action.expected,
        simulated=result == _SIMULATED,
        written_at=now,
        stall_rate_at_write=proposal.stall_rate if proposal is not None else 0.0,
        events_high_at_write=proposal.events_high if proposal is not None else None,
        stall_baseline=proposal.stall_baseline if proposal is not None else None,
    )
    return state.with_target(key, replace(target, memory_high=owned))


def _note_vfs_write(state: CoreState, action: SetSysctl, result: str, now: float) -> CoreState:
    proposal = state.node.proposed_vfs
    node = replace(state.node, proposed_vfs=None)
    if proposal is None or not (result in _WRITTEN or result == _SIMULATED):
        return state.with_node(node)
    owned = ChangedValue(
        ours=action.value,
        before=proposal.before,
        simulated=result == _SIMULATED,
        written_at=now,
        stall_rate_at_write=proposal.write.stall_rate,
        events_high_at_write=None,
    )
    return state.with_node(replace(node, vfs_owner=proposal.owner, vfs_cache_pressure=owned))


def forget(state: CoreState, key: TargetKey) -> CoreState:
    """The cgroup is gone: drop everything about the target, with no actions.

    A gone cgroup's memory.high needs no restore. A node-wide value it owns
    (vm.vfs_cache_pressure) is still changed on the node: it stays recorded
    and the next decision about any target restores it.
    """
    node = state.node
    if node.proposed_vfs is not None and node.proposed_vfs.owner == key:
        node = replace(node, proposed_vfs=None)
    return state.without_target(key).with_node(node)


def on_exit(policies: Mapping[str, Policy], state: CoreState, now: float) -> Decision:
    """Restores for every value owned under one of ``policies`` whose rollback.restore_on_exit is set.

    Only the given policies are considered, so the caller picks the scope: all
    loaded policies at shutdown, or just the removed/changed ones on reload
    (values owned under other policies are left alone). Restores already in
    flight are not asked twice. The records are the actions' causes.
    """
    actions: List[Action] = []
    new_state = state

    def wants_restore(policy_name: str) -> bool:
        policy = policies.get(policy_name)
        return policy is not None and policy.rollback.restore_on_exit

    for key, target in state.targets.items():
        owned = target.memory_high
        if owned is None or owned.restore_requested or key.cgroup is None or not wants_restore(key.policy):
            continue
        evidence = evidence_from(target.last_snapshot) if target.last_snapshot is not None else {}
        cause = Record(
            type=RecordType.ROLLED_BACK,
            message=(
                f"restore memory.high of {describe_target(key.cgroup)} to {format_bytes(owned.before)} "
                f"(ours: {format_bytes(owned.ours)}) on exit"
            ),
            policy=key.policy,
            cgroup=key.cgroup,
            action=Knob.MEMORY_HIGH,
            evidence=evidence,
        )
        actions.append(RestoreMemoryHigh(cgroup=key.cgroup, ours=owned.ours, cause=cause))
        new_state = new_state.with_target(
            key, replace(target, memory_high=replace(owned, restore_requested=True))
        )
    owner = state.node.vfs_owner
    vfs = state.node.vfs_cache_pressure
    if owner is not None and vfs is not None and not vfs.restore_requested and wants_restore(owner.policy):
        last = state.targets[owner].last_snapshot if owner in state.targets else None
        cause = Record(
            type=RecordType.ROLLED_BACK,
            message=f"restore vm.vfs_cache_pressure to {vfs.before} (ours: {vfs.ours}) on exit",
            policy=owner.policy,
            cgroup=owner.cgroup,
            action=VFS_CACHE_PRESSURE,
            evidence=evidence_from(last) if last is not None else {},
        )
        actions.append(RestoreSysctl(name=VFS_CACHE_PRESSURE, ours=vfs.ours, cause=cause))
        new_state = new_state.with_node(
            replace(new_state.node, vfs_cache_pressure=replace(vfs, restore_requested=True))
        )
    return Decision(state=new_state, actions=tuple(actions), records=(), wakeup_at=None)
