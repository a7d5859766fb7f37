"""memory.high: throttle a cgroup and push it into reclaim above a limit we set, never below the floor
of what no reclaim can take. Ours once written, given back at calm, back-off or exit.

memory.high below the unreclaimable part of a cgroup does not free memory, it throttles the cgroup
into an endless stall; so there is a floor. A value another writer (systemd's MemoryHigh=, kubelet, an
operator) set is theirs: the plan declines, the write stands back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Mapping, Optional, Tuple, cast

from remediator.core.state import ChangedValue, NodeState, ProposedWrite, TargetKey, TargetState
from remediator.core.wording import describe_target, format_share
from remediator.diagnosis.composition import MemoryComposition, memory_high_floor, page_align_down
from remediator.knobs.base import (
    RESTORE_RETRY,
    SIMULATED,
    WRITTEN,
    Action,
    Holding,
    KnobFile,
    KnobPlugin,
    KnobWriter,
    Look,
    OutcomeT_co,
    OwnedKnob,
    ReleaseOwnership,
    RungContext,
    RungDecline,
    RungOutcome,
    RungTake,
)
from remediator.policy.compiled import MemoryHighAction
from remediator.readings import CgroupSnapshot
from remediator.records import Knob, Record, RecordType, evidence_from
from remediator.sizes import format_bytes

MEMORY_HIGH = Knob.MEMORY_HIGH
FILE = "memory.high"

OWNED = OwnedKnob(
    knob=MEMORY_HIGH,
    kind="memory_high",
    per_cgroup=True,
    target=lambda cgroup: KnobFile(cgroup, FILE),
    limit=True,
    format=format_bytes,
    describe=lambda cgroup: f"memory.high of {cgroup}",
    snapshot_field="high_bytes",
)


@dataclass(frozen=True)
class SetMemoryHigh(Action):
    """Write memory.high (None = "max").

    ``expected`` is the value the core believes is there now (None = "max");
    the executor re-reads and stands back if it differs, because then another
    writer (systemd, kubelet) owns the value.
    """

    cgroup: str
    value: Optional[int]
    expected: Optional[int]
    cause: Record


@dataclass(frozen=True)
class RestoreMemoryHigh(Action):
    """Put back the original memory.high recorded before our first write,
    unless someone else changed it since our last write (``ours``)."""

    cgroup: str
    ours: Optional[int]
    cause: Record


class MemoryHigh(KnobPlugin):
    knob = MEMORY_HIGH
    owned: Optional[OwnedKnob] = OWNED
    cgroup_writes = frozenset({FILE})

    def handles(self, action: Action) -> bool:
        return isinstance(action, (SetMemoryHigh, RestoreMemoryHigh))

    def subject(self, action: Action) -> Optional[str]:
        return action.cgroup if isinstance(action, (SetMemoryHigh, RestoreMemoryHigh)) else None

    def plan(self, spec: object, index: int, ctx: RungContext) -> RungOutcome:
        return _plan(cast(MemoryHighAction, spec), index, ctx)

    def note(self, target: TargetState, node: NodeState, action: Action, result: str, now: float) -> Holding:
        """A write (applied, partial, or dry-run's would) makes the target own the value; a restore
        drops it, except a failed one (asked again at the next calm look)."""
        if isinstance(action, SetMemoryHigh):
            return Holding(_note_write(target, action, result, now), node)
        assert isinstance(action, RestoreMemoryHigh)
        if target.memory_high is None:
            return Holding(target, node)
        owned = target.memory_high
        memory_high = replace(owned, restore_requested=False) if result == RESTORE_RETRY else None
        return Holding(replace(target, memory_high=memory_high), node)

    def holds(self, look: Look, target: TargetState, node: NodeState) -> bool:
        owned = target.memory_high
        return owned is not None and not owned.restore_requested

    def propose(
        self, look: Look, target: TargetState, node: NodeState, action: Action, rate: float
    ) -> Holding:
        if not isinstance(action, SetMemoryHigh) or action.value is None:
            return Holding(target, node)
        events_high = look.snapshot.own_high_events if isinstance(look.snapshot, CgroupSnapshot) else 0
        baseline = (look.now, look.total_us)
        write = ProposedWrite(action.value, rate, events_high, stall_baseline=baseline)
        return Holding(replace(target, proposed_memory_high=write), node)

    def release_if_changed(self, look: Look, target: TargetState, node: NodeState) -> Holding:
        snapshot = look.snapshot
        owned = target.memory_high
        if (
            owned is None
            or owned.restore_requested
            or not isinstance(snapshot, CgroupSnapshot)
            or snapshot.high_bytes == owned.ours
        ):
            return Holding(target, node)
        cause = look.record(
            RecordType.STOOD_BACK,
            f"memory.high of {look.where} changed from {format_bytes(owned.ours)} to "
            f"{format_bytes(snapshot.high_bytes)} by another writer; releasing it, not restoring",
            MEMORY_HIGH,
        )
        release = ReleaseOwnership(cgroup=snapshot.cgroup, file=FILE, cause=cause)
        return Holding(replace(target, memory_high=None, proposed_memory_high=None), node, (release,))

    def back_off(self, look: Look, target: TargetState, node: NodeState) -> Holding:
        """Our memory.high throttles the cgroup (its own high events and its stall rate rose since the
        write): restore it, and do not lower it again before calm."""
        snapshot = look.snapshot
        owned = target.memory_high
        if owned is None or owned.restore_requested or owned.events_high_at_write is None:
            return Holding(target, node)
        if owned.stall_baseline is None or not isinstance(snapshot, CgroupSnapshot):
            return Holding(target, node)
        # Judged like the rung (at its verify time) and over all of the time since: an observation
        # moments after the write (a trigger event right behind it) has an interval of milliseconds
        # whose rate says nothing, and backing off on it undid good clamps (the packaging VM test).
        decided_at, total_then = owned.stall_baseline
        since = look.now - decided_at
        stalled_us = look.total_us - total_then
        if since < look.policy.verify_sec or since <= 0 or stalled_us < 0:
            return Holding(target, node)
        rate = stalled_us / (since * 1e6)
        # The cgroup's own counter: a child breaching its own memory.high is not our clamp throttling.
        if snapshot.own_high_events <= owned.events_high_at_write or rate <= owned.stall_rate_at_write:
            return Holding(target, node)
        cause = look.record(
            RecordType.BACKED_OFF,
            # A lower-case verb phrase: the executor prefixes "would " in dry-run.
            f"restore memory.high of {look.where} to {format_bytes(owned.before)}: our "
            f"{format_bytes(owned.ours)} is throttling it (memory.events.local high rose from "
            f"{owned.events_high_at_write} to {snapshot.own_high_events} and the stall rate from "
            f"{format_share(owned.stall_rate_at_write)} to {format_share(rate)} since it was set); "
            f"not lowering memory.high again before {look.policy.rollback.calm_sec:g} s of calm",
            MEMORY_HIGH,
        )
        restore = RestoreMemoryHigh(cgroup=snapshot.cgroup, ours=owned.ours, cause=cause)
        barred = replace(target, memory_high=replace(owned, restore_requested=True), memory_high_barred=True)
        return Holding(barred, node, (restore,))

    def calm_restore(self, look: Look, target: TargetState, node: NodeState, calm: str) -> Holding:
        owned = target.memory_high
        snapshot = look.snapshot
        if owned is None or owned.restore_requested or not isinstance(snapshot, CgroupSnapshot):
            return Holding(target, node)
        cause = look.record(
            RecordType.ROLLED_BACK,
            f"restore memory.high of {look.where} to {format_bytes(owned.before)} "
            f"(ours: {format_bytes(owned.ours)}): {calm}",
            MEMORY_HIGH,
        )
        restore = RestoreMemoryHigh(cgroup=snapshot.cgroup, ours=owned.ours, cause=cause)
        return Holding(replace(target, memory_high=replace(owned, restore_requested=True)), node, (restore,))

    def exit_restores(
        self, targets: Mapping[TargetKey, TargetState], node: NodeState, wants_restore: Callable[[str], bool]
    ) -> Tuple[Mapping[TargetKey, TargetState], NodeState, Tuple[Action, ...]]:
        actions: List[Action] = []
        changed: Dict[TargetKey, TargetState] = {}
        for key, target in targets.items():
            owned = target.memory_high
            if (
                owned is None
                or owned.restore_requested
                or key.cgroup is None
                or not wants_restore(key.policy)
            ):
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
                action=MEMORY_HIGH,
                evidence=evidence,
            )
            actions.append(RestoreMemoryHigh(cgroup=key.cgroup, ours=owned.ours, cause=cause))
            changed[key] = replace(target, memory_high=replace(owned, restore_requested=True))
        return changed, node, tuple(actions)

    def execute(self, action: Action, writer: KnobWriter[OutcomeT_co]) -> OutcomeT_co:
        if isinstance(action, RestoreMemoryHigh):
            return writer.restore(OWNED, action.cgroup)
        assert isinstance(action, SetMemoryHigh)
        return writer.set_owned(OWNED, action.cgroup, action.value, action.expected, check_expected=True)


@dataclass(frozen=True)
class MemoryHighPlan:
    """Where memory.high would go, and why."""

    base: int  # memory.max or memory.current
    target: int
    floor: int
    raised_to_floor: bool


def plan_memory_high(
    snapshot: CgroupSnapshot, composition: MemoryComposition, spec: MemoryHighAction
) -> Optional[MemoryHighPlan]:
    """fraction x base, page-aligned down, never above memory.max, raised to the floor if below it.

    None when there is no base (relative to memory.max, and memory.max is unset).
    The result can be >= memory.max when the floor leaves no room: callers decline then.
    """
    if spec.relative_to == "max":
        if snapshot.max_bytes is None:
            return None
        base = snapshot.max_bytes
    else:
        base = snapshot.current_bytes
    target = page_align_down(int(base * spec.fraction))
    if snapshot.max_bytes is not None:
        target = min(target, snapshot.max_bytes)
    floor = memory_high_floor(composition, spec.floor_margin_bytes, spec.min_bytes)
    raised = target < floor
    if raised:
        target = floor
    return MemoryHighPlan(base=base, target=target, floor=floor, raised_to_floor=raised)


def describe_unreclaimable(comp: MemoryComposition) -> str:
    """The parts of the floor under memory.high (what no reclaim can take)."""
    parts = []
    if not comp.swap_usable:
        parts.append(f"anon without swap {format_bytes(comp.anon_bytes)}")
        parts.append(f"shmem/tmpfs {format_bytes(comp.shmem_bytes)}")
        kernel = comp.unreclaimable_bytes - comp.anon_bytes - comp.shmem_bytes
    else:
        kernel = comp.unreclaimable_bytes
    parts.append(f"kernel {format_bytes(max(0, kernel))}")
    return ", ".join(parts)


def _plan(spec: MemoryHighAction, index: int, ctx: RungContext) -> RungOutcome:
    snapshot = ctx.snapshot
    comp = ctx.composition
    if not isinstance(snapshot, CgroupSnapshot) or comp is None:
        return RungDecline(
            "needs_cgroup", "memory_high writes a cgroup's memory.high; a node target has none"
        )
    if ctx.memory_high_barred:
        return RungDecline(
            "backed_off",
            f"memory.high on {ctx.where} was backed off because it throttled the cgroup; "
            f"not lowering it again before {ctx.policy.rollback.calm_sec:g} s of calm",
        )
    owned = ctx.owned_memory_high
    if owned is None and ctx.clamped_elsewhere >= spec.max_clamped_cgroups:
        return RungDecline(
            "clamp_cap",
            f"{ctx.clamped_elsewhere} cgroups of policy {ctx.policy.name} already hold a memory.high of ours "
            f"(max_clamped_cgroups {spec.max_clamped_cgroups}): not clamping {ctx.where} too",
        )
    if owned is None and snapshot.high_bytes is not None:
        return RungDecline(
            "other_writer",
            f"memory.high is set to {format_bytes(snapshot.high_bytes)} by another writer; not fighting it",
        )
    plan = plan_memory_high(snapshot, comp, spec)
    if plan is None:
        return RungDecline(
            "no_memory_max",
            f"memory.max of {ctx.where} is not set: memory.high relative to memory.max has no base",
        )
    # The floor can push the target up to the value it should stay under:
    # then memory.high would not free anything, it would only throttle.
    limit: Optional[Tuple[str, int]] = None
    if snapshot.max_bytes is not None and plan.target >= snapshot.max_bytes:
        limit = ("memory.max", snapshot.max_bytes)
    elif spec.relative_to == "current" and plan.target >= snapshot.current_bytes:
        limit = ("current usage", snapshot.current_bytes)
    if limit is not None:
        limit_name, limit_bytes = limit
        if plan.raised_to_floor:
            return RungDecline(
                "no_room_above_floor",
                f"unreclaimable memory ({describe_unreclaimable(comp)}) leaves no room for memory.high "
                f"below {limit_name}: lowering it would only throttle (floor {format_bytes(plan.floor)}, "
                f"{limit_name} {format_bytes(limit_bytes)})",
            )
        return RungDecline(
            "not_below_limit",
            f"memory.high target {format_bytes(plan.target)} ({format_share(spec.fraction)} of "
            f"{format_bytes(plan.base)}) is not below {limit_name} of {ctx.where} "
            f"({format_bytes(limit_bytes)})",
        )
    if owned is not None and owned.ours <= plan.target:
        return RungDecline(
            "already_low",
            f"memory.high of {ctx.where} is already {format_bytes(owned.ours)} (ours), "
            f"at or below the target {format_bytes(plan.target)}",
        )
    floor_note = (
        f", raised to the floor over unreclaimable memory ({describe_unreclaimable(comp)})"
        if plan.raised_to_floor
        else ""
    )
    base_name = "memory.max" if spec.relative_to == "max" else "memory.current"
    message = (
        f"set memory.high of {ctx.where} to {format_bytes(plan.target)} "
        f"({format_share(spec.fraction)} of {base_name} {format_bytes(plan.base)}{floor_note}); "
        f"{ctx.stall_text}"
    )
    cause = ctx.record(RecordType.ACTION_APPLIED, message, spec.kind, index)
    return RungTake(
        SetMemoryHigh(cgroup=snapshot.cgroup, value=plan.target, expected=snapshot.high_bytes, cause=cause)
    )


def _note_write(target: TargetState, action: SetMemoryHigh, result: str, now: float) -> TargetState:
    proposal = target.proposed_memory_high
    target = replace(target, proposed_memory_high=None)
    if action.value is None or not (result in WRITTEN or result == SIMULATED):
        return target
    previous = target.memory_high
    owned = ChangedValue(
        ours=action.value,
        # A second, lower write keeps the original of the first one.
        before=previous.before if previous is not None else action.expected,
        written_at=now,
        stall_rate_at_write=proposal.stall_rate if proposal is not None else 0.0,
        events_high_at_write=proposal.events_high if proposal is not None else None,
        stall_baseline=proposal.stall_baseline if proposal is not None else None,
    )
    return replace(target, memory_high=owned)
