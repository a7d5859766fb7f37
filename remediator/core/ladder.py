"""The rungs of a policy's ladder: whether a policy's conditions hold, and which knob plans a rung.

Pure functions of a fresh snapshot and what the core owns. Each rung's plan
(take it, or decline with a sentence that says what the memory is made of and
why the rung would not help) is its knob's (``remediator.knobs``): a declined
action is only useful to an operator if it explains itself (kernel-facts.md).
Here: the policy conditions, and the one rule every node-wide knob shares:
vfs_cache_pressure and drop_caches hit every tenant on the node, so only node
policies, or cgroup policies that explicitly allow it, may use them.

Rate limits (cooldowns, hourly caps, the node-wide cap) are not decided here
but in ``remediator.core.decide``, which owns the clock-derived state.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

from remediator.core.state import ChangedValue
from remediator.core.wording import describe_composition, describe_target, format_share
from remediator.diagnosis.composition import MemoryComposition
from remediator.knobs import plugin_of
from remediator.knobs.base import RungContext, RungDecline, RungOutcome
from remediator.policy.compiled import NODE_WIDE_KINDS, ActionSpec, Conditions
from remediator.readings import CgroupSnapshot, NodeSnapshot
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
    if plugin is None:
        raise ValueError(f"no knob module for rung kind {spec.kind}")
    return plugin.plan(spec, index, ctx)
