"""The decision core: policy + one target's view + one observation + ``now`` -> a Decision.

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
   judges the rung: calm -> the rung helped, back to rung 0. Still pressured
   -> its knob may find it helped in part (``KnobPlugin.repeat_reason``:
   reclaim when the stall rate since it is at most 3/4 of the rate before the
   chain of reclaims began, or when the cache it freed was refilled by new
   data rather than refaulted working set): the same rung is taken again
   (ACTION_APPLIED with HELPED_IN_PART=1, subject to its limits); else
   ESCALATED and the rungs above are tried (none left -> "ladder exhausted",
   and the next pressure starts at rung 0 again, subject to cooldowns).
   Observations before the verify time never escalate.
6. Other writers. On every observation of a target whose memory.high (or, for
   the owner, vm.vfs_cache_pressure) we own, a value different from ours (in
   dry-run too: its snapshots show what it swallowed) means another writer
   took over: STOOD_BACK + ReleaseOwnership, and it is never restored.
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
from types import MappingProxyType
from typing import List, Mapping, Optional, Tuple

from remediator.core.ladder import evaluate_rung, failed_condition
from remediator.core.limits import HOUR_SEC, limit_blocking, limit_expiries, recent
from remediator.core.measure import stall_text
from remediator.core.phases import TRANSITIONS, Phase, phase_of
from remediator.core.state import (
    CoreConfig,
    FollowUpPeriod,
    NodeState,
    Observation,
    PendingRung,
    TargetKey,
    TargetState,
    TargetView,
)
from remediator.core.turn import TurnBase
from remediator.core.wording import describe_target, format_share
from remediator.knobs import plugin_for, plugin_of
from remediator.knobs.base import Action, RungDecline, RungTake, Verdict
from remediator.knobs.reclaim import FOLLOW_UP_FIELD, HELPED_IN_PART_FIELD, Reclaim
from remediator.policy.compiled import (
    NODE_WIDE_KINDS,
    ActionSpec,
    Policy,
    ReclaimAction,
    ReclaimFollowUp,
)
from remediator.readings import CgroupSnapshot
from remediator.records import Record, RecordType
from remediator.sizes import format_bytes

__all__ = ["Decision", "decide", "follow_up_rung"]

# Floor for the re-check interval of an open episode, so a policy with a
# tiny verify_sec cannot make the watcher spin.
MIN_RECHECK_SEC = 1.0
# After an unconfirmed trigger event, look again after this share of the trigger's window. The
# kernel raises an event on the stall since its window began, which after an idle spell can be the
# tail of an episode long gone; the new stall may only be starting, and the kernel's next event
# comes a whole window later (one per window). Measured: 1 of 30 reactions a window (2.08 s) late.
UNCONFIRMED_RECHECK_WINDOW_SHARE = 0.25


@dataclass(frozen=True)
class Decision:
    """What a decision returns; the caller stores ``targets`` and ``node`` (``CoreState.apply``)."""

    # The new states of the targets decided about: the observed one for ``decide``, those whose
    # restores were asked for ``on_exit``.
    targets: Mapping[TargetKey, TargetState]
    node: NodeState
    actions: Tuple[Action, ...]
    records: Tuple[Record, ...]
    # When the caller must observe this target again (fired=False); None = only on kernel events.
    wakeup_at: Optional[float]
    # The target's phase after this decision (remediator.core.phases); IDLE for the exit's restores.
    phase: Phase = Phase.IDLE


class _Turn(TurnBase):
    """One decision in progress: the episode, the ladder and the wake-up (steps 2-5, 9, 10).
    Rebinds (never mutates) immutable state values."""

    # ------------------------------------------------------------ the turn

    def run(self) -> None:
        self._restore_orphaned()
        if self.m.delta_us is None:
            return  # baseline only
        self._check_other_writers()
        self._back_off()
        self._expire_follow_up()
        if self.m.pressured is True:
            self._on_pressure()
        elif self.m.pressured is False:
            self._on_calm()
            self._follow_up()

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
                self._judge_pressured(rung)
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
                period = FollowUpPeriod(since=self.now, unrelieved_rate=rung.unrelieved_rate)
                self.target = replace(self.target, follow_up=period)
        if self._calm_lasted():
            self.target = replace(self.target, memory_high_barred=False)
            self._roll_back()

    def _expire_follow_up(self) -> None:
        period = self.target.follow_up
        found = follow_up_rung(self.policy)
        if period is not None and (found is None or self.now - period.since >= found[2].for_sec):
            self.target = replace(self.target, follow_up=None)

    def _follow_up(self) -> None:
        """Step 10 of the module docstring: reclaim again on a calm look once usage nears memory.max."""
        period = self.target.follow_up
        found = follow_up_rung(self.policy)
        snapshot = self.obs.snapshot
        if period is None or found is None or self.target.rung is not None or not self.policy.enabled:
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
        if limit_blocking(spec, index, self.target, self.node, self.now, self.config, self.where) is not None:
            return
        outcome = evaluate_rung(spec, index, ctx)
        if not isinstance(outcome, RungTake) or not isinstance(outcome.action, Reclaim):
            return
        action = outcome.action
        cause = replace(
            action.cause,
            message=(
                f"follow-up {self.now - period.since:.0f} s into the {follow.for_sec:g} s after a pressure "
                f"reclaim relieved: usage {format_bytes(snapshot.current_bytes)} is {format_share(usage)} of "
                f"memory.max (follow_up at {format_share(follow.min_usage_fraction_of_max)}); "
                + action.cause.message
            ),
            extra={**action.cause.extra, FOLLOW_UP_FIELD: "1"},
        )
        self._take(
            index, spec, replace(action, cause=cause), follow_up=True, unrelieved=period.unrelieved_rate
        )

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

    def _judge_pressured(self, rung: PendingRung) -> None:
        """Step 5: pressure at the verdict of ``rung``: repeat it if it helped in part, else escalate."""
        self.target = replace(self.target, rung=None)
        if not self.policy.enabled:
            return
        self._confirm()
        if not self._conditions_hold():
            return
        if self._repeat_if_helped(rung):
            return
        self._escalate(rung)

    def _rate_since(self, rung: PendingRung) -> Optional[float]:
        """The stall rate over the whole time since ``rung`` was taken (None: not measurable)."""
        elapsed = self.now - rung.taken_at
        if rung.stall_total_us is None or elapsed <= 0 or self.m.total_us < rung.stall_total_us:
            return None
        return (self.m.total_us - rung.stall_total_us) / (elapsed * 1e6)

    def _repeat_if_helped(self, rung: PendingRung) -> bool:
        """The rung's knob finds a reason to take it again instead of escalating (it helped in part);
        True if it was taken again."""
        plugin = plugin_of(rung.kind)
        verdict = Verdict(rung, self.obs.snapshot, self.now, self._rate_since(rung), self.policy.trigger.kind)
        why = plugin.repeat_reason(verdict) if plugin is not None else None
        if why is None:
            return False
        spec = self.policy.ladder[rung.index]
        action = self._eligible(rung.index, spec)
        if action is None:
            return False
        message = f"{rung.kind} again (rung {rung.index}) with pressure at its verdict: {why}; "
        extra = {**action.cause.extra, HELPED_IN_PART_FIELD: "1"}
        cause = replace(action.cause, message=message + action.cause.message, extra=extra)
        self._take(rung.index, spec, action.with_cause(cause), unrelieved=rung.unrelieved_rate)
        return True

    def _escalate(self, rung: PendingRung) -> None:
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
        for index in range(start, len(self.policy.ladder)):
            spec = self.policy.ladder[index]
            action = self._eligible(index, spec)
            if action is not None:
                self._take(index, spec, action)
                return True
        return False

    def _eligible(self, index: int, spec: ActionSpec) -> Optional[Action]:
        """Rung ``index``'s action if its knob's plan takes it and no rate limit holds it back; else
        None, with the decline recorded."""
        outcome = evaluate_rung(spec, index, self._rung_context())
        if isinstance(outcome, RungDecline):
            self._decline(f"rung{index}:{outcome.reason}", outcome.message, spec.kind, index)
            return None
        blocked = limit_blocking(spec, index, self.target, self.node, self.now, self.config, self.where)
        if blocked is not None:
            reason, message = blocked
            self._decline(f"rung{index}:{reason}", message, spec.kind, index)
            return None
        return outcome.action

    def _take(
        self,
        index: int,
        spec: ActionSpec,
        action: Action,
        follow_up: bool = False,
        unrelieved: Optional[float] = None,
    ) -> None:
        """Take rung ``index``. ``unrelieved``: the stall rate before the reclaims of a chain this
        rung continues (a repeat, a follow-up); a rung taken for a pressure measures it now, or keeps
        the follow-up period's when that was higher (a mid-chain pressure is already relieved in part)."""
        rate = self.m.stall_rate if self.m.stall_rate is not None else 0.0
        if not follow_up and unrelieved is None:
            period = self.target.follow_up
            carried = period.unrelieved_rate if period is not None else None
            rates = [r for r in (self.m.pressure_rate, carried) if r is not None]
            unrelieved = max(rates) if rates else None
        self.actions.append(action)
        plugin = plugin_for(action)
        target = self.target.with_rung_taken(index, self.now, HOUR_SEC)
        pending = PendingRung(
            index=index,
            kind=spec.kind,
            taken_at=self.now,
            stall_rate=rate,
            follow_up=follow_up,
            stall_total_us=self.m.total_us,
            unrelieved_rate=unrelieved,
            amount=plugin.amount(action) if plugin is not None else None,
            taken_snapshot=self.obs.snapshot,
        )
        target = replace(target, rung=pending)
        if spec.kind in NODE_WIDE_KINDS:
            self.node = replace(self.node, actions_at=(*recent(self.node.actions_at, self.now), self.now))
        if plugin is not None:
            held = plugin.propose(self._look(), target, self.node, action, rate)
            target, self.node = held.target, held.node
        self.target = target

    # ------------------------------------------------------------ result

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
                candidates.extend(limit_expiries(self.policy, self.target, self.node, self.now, self.config))
        if self._owns_anything():
            if target.calm_since is not None:
                candidates.append(target.calm_since + policy.rollback.calm_sec)
            else:
                candidates.append(recheck)
        if self.m.fired and self.m.pressured is None and self.m.delta_us is not None:
            candidates.append(self.now + UNCONFIRMED_RECHECK_WINDOW_SHARE * policy.trigger.window_us / 1e6)
        found = follow_up_rung(policy)
        if target.follow_up is not None and found is not None and policy.enabled:
            end = target.follow_up.since + found[2].for_sec
            if self.now < end:
                candidates.append(min(self.now + found[2].every_sec, end))
        return min(candidates) if candidates else None

    def decision(self) -> Decision:
        return Decision(
            targets=MappingProxyType({self.key: self.target}),
            node=self.node,
            actions=tuple(self.actions),
            records=tuple(self.records),
            wakeup_at=self._wakeup(),
        )


def follow_up_rung(policy: Policy) -> Optional[Tuple[int, ReclaimAction, ReclaimFollowUp]]:
    """The ladder's reclaim rung with a follow_up, if any (a ladder has each kind at most once)."""
    for index, spec in enumerate(policy.ladder):
        if isinstance(spec, ReclaimAction) and spec.follow_up is not None:
            return index, spec, spec.follow_up
    return None


def decide(policy: Policy, view: TargetView, obs: Observation, now: float, config: CoreConfig) -> Decision:
    """Decide what to do about one observation of ``obs.key`` (see the module docstring).

    ``view`` is what the caller holds about the target (``CoreState.view(obs.key)``); the decision
    returns the target's new state and the node's, which the caller stores (``CoreState.apply``).

    ``now`` is monotonic seconds from the injected clock. ``policy`` must be the
    policy named by ``obs.key.policy``. A disabled policy still measures,
    stands back and rolls back, but never takes a rung.
    """
    turn = _Turn(policy, view, obs, now, config)
    turn.run()
    decision = turn.decision()
    before = phase_of(view.target, _owns_vfs(view.node, obs.key))
    after = phase_of(turn.target, _owns_vfs(turn.node, obs.key))
    if (before, after) in TRANSITIONS:
        return replace(decision, phase=after)
    # A bug in the core: say so loudly, and still carry the decision out (a stopped daemon would
    # leave every clamp in place).
    broken = Record(
        RecordType.INTERNAL_ERROR,
        f"internal error: the decision core moved {describe_target(obs.key.cgroup)} from phase {before} to "
        f"{after}, a move its transition table does not list; please report this",
        policy=policy.name,
        cgroup=obs.key.cgroup,
        evidence=turn.evidence,
        extra={"PHASE_BEFORE": before.value, "PHASE": after.value},
    )
    return replace(decision, records=(*decision.records, broken), phase=after)


def _owns_vfs(node: NodeState, key: TargetKey) -> bool:
    return node.vfs_owner == key and node.vfs_cache_pressure is not None
