"""The rungs of a policy's ladder: when each one may be taken, and how much it does.

Pure functions of a fresh snapshot and what the core owns. Every "no" comes
with a sentence that says what the memory is made of and why the rung would
not help, because a declined action is only useful to an operator if it
explains itself (kernel-facts.md):

- memory.reclaim can only take clean, non-shmem page cache (without swap);
  shmem/tmpfs, anon and kernel memory stay, dirty pages need I/O first.
- memory.high below the unreclaimable part of a cgroup does not free memory,
  it throttles the cgroup into an endless stall; so there is a floor.
- vfs_cache_pressure and drop_caches hit every tenant on the node: only node
  policies, or cgroup policies that explicitly allow it, may use them.

Rate limits (cooldowns, hourly caps, the node-wide cap) are not decided here
but in ``remediator.core.decide``, which owns the clock-derived state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from remediator.core.actions import SetMemoryHigh
from remediator.core.state import ChangedValue
from remediator.core.wording import (
    describe_composition,
    describe_target,
    describe_unreclaimable,
    format_share,
)
from remediator.diagnosis.composition import (
    MemoryComposition,
    memory_high_floor,
    page_align_down,
)
from remediator.knobs import plugin_of
from remediator.knobs.base import RungContext, RungDecline, RungOutcome, RungTake
from remediator.policy.compiled import (
    NODE_WIDE_KINDS,
    ActionSpec,
    Conditions,
    MemoryHighAction,
)
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import RecordType
from remediator.sizes import format_bytes

# ---------------------------------------------------------------- conditions


def failed_condition(
    conditions: Conditions,
    snapshot: Union[CgroupSnapshot, NodeSnapshot],
    composition: Optional[MemoryComposition],
    owned_memory_high: Optional[ChangedValue],
) -> Optional[Tuple[str, str]]:
    """The first policy condition that does not hold, as (reason key, message); None if all hold.

    Conditions describe a cgroup's memory; on a node target they do not apply
    (policy validation is expected to refuse them there). memory.high that we
    set ourselves does not count as "set": the condition is about the value
    the cgroup had before we touched it.
    """
    if not isinstance(snapshot, CgroupSnapshot) or composition is None:
        return None
    where = describe_target(snapshot.cgroup)
    if conditions.min_reclaimable_fraction is not None:
        share = composition.fraction_of_usage(composition.reclaimable_cache_bytes)
        if share < conditions.min_reclaimable_fraction:
            return (
                "min_reclaimable_fraction",
                f"condition min_reclaimable_fraction failed on {where}: clean page cache is "
                f"{format_bytes(composition.reclaimable_cache_bytes)} = {format_share(share)} of "
                f"{format_bytes(composition.usage_bytes)} used, below "
                f"{format_share(conditions.min_reclaimable_fraction)} ({describe_composition(composition)})",
            )
    if conditions.memory_high_unset is not None:
        original = owned_memory_high.before if owned_memory_high is not None else snapshot.high_bytes
        is_unset = original is None
        if is_unset != conditions.memory_high_unset:
            wanted = "unset" if conditions.memory_high_unset else "set"
            return (
                "memory_high_unset",
                f"condition memory_high_unset failed on {where}: memory.high is {format_bytes(original)}, "
                f"the policy acts only where it is {wanted}",
            )
    if conditions.min_usage_fraction_of_max is not None:
        if snapshot.max_bytes is None or snapshot.max_bytes <= 0:
            return (
                "min_usage_fraction_of_max",
                f"condition min_usage_fraction_of_max failed on {where}: memory.max is not set "
                f"(usage {format_bytes(snapshot.current_bytes)})",
            )
        usage_share = snapshot.current_bytes / snapshot.max_bytes
        if usage_share < conditions.min_usage_fraction_of_max:
            return (
                "min_usage_fraction_of_max",
                f"condition min_usage_fraction_of_max failed on {where}: usage "
                f"{format_bytes(snapshot.current_bytes)} is {format_share(usage_share)} of memory.max "
                f"{format_bytes(snapshot.max_bytes)}, below "
                f"{format_share(conditions.min_usage_fraction_of_max)}",
            )
    return None


# ---------------------------------------------------------------- amounts


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


# ---------------------------------------------------------------- rungs


def evaluate_rung(spec: ActionSpec, index: int, ctx: RungContext) -> RungOutcome:
    """Whether rung ``index`` (of kind ``spec.kind``) can help now, and the action if so."""
    if spec.kind in NODE_WIDE_KINDS and not (ctx.policy.is_node or ctx.policy.allow_node_wide):
        return RungDecline(
            "node_wide_not_allowed",
            f"{spec.kind} is node-wide and affects every tenant; policy {ctx.policy.name} watches cgroups "
            "and does not set allow_node_wide",
        )
    plugin = plugin_of(spec.kind)
    if plugin is not None:
        return plugin.plan(spec, index, ctx)
    if isinstance(spec, MemoryHighAction):
        return _memory_high(spec, index, ctx)
    raise ValueError(f"no knob module for rung kind {spec.kind}")


def _memory_high(spec: MemoryHighAction, index: int, ctx: RungContext) -> RungOutcome:
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
