"""Validated policy models -> the runtime ``Policy`` (``remediator.policy.compiled``).

Nothing is checked here: the models did that. This is unit conversion
(milliseconds -> microseconds for the kernel's trigger, sizes -> bytes,
durations -> float seconds) and the change of shape the decision core wants.
"""

from __future__ import annotations

from typing import Optional

from remediator.identity import QosClass
from remediator.policy.compiled import (
    ActionSpec,
    CgroupSelector,
    Conditions,
    DropCachesAction,
    KubernetesSelector,
    MemoryHighAction,
    NodeTarget,
    Policy,
    RateLimit,
    ReclaimAction,
    ReclaimFollowUp,
    Rollback,
    Target,
    TriggerSpec,
    VfsCachePressureAction,
)
from remediator.policy.models import (
    ActionModel,
    CgroupsTargetModel,
    ConditionsModel,
    KubernetesSelectionModel,
    MemoryHighModel,
    PolicyDocument,
    ReclaimModel,
    TargetModel,
    TriggerModel,
    VfsCachePressureModel,
)

US_PER_MS = 1000


def compile_policy(document: PolicyDocument, name: str, source: str) -> Policy:
    """The runtime policy for a validated document; ``name`` is the file's stem."""
    return Policy(
        name=name,
        source=source,
        target=compile_target(document.target),
        trigger=compile_trigger(document.trigger),
        conditions=compile_conditions(document.conditions),
        ladder=tuple(compile_action(action) for action in document.actions),
        verify_sec=float(document.verify_sec),
        rollback=Rollback(
            calm_sec=float(document.rollback.calm_sec), restore_on_exit=document.rollback.restore_on_exit
        ),
        allow_node_wide=document.allow_node_wide,
        description=document.description,
        enabled=document.enabled,
    )


def compile_target(target: TargetModel) -> Target:
    if isinstance(target, CgroupsTargetModel):
        return CgroupSelector(
            include=tuple(target.include),
            exclude=tuple(target.exclude),
            kubernetes=compile_kubernetes(target.kubernetes),
        )
    return NodeTarget()


def compile_kubernetes(selection: Optional[KubernetesSelectionModel]) -> Optional[KubernetesSelector]:
    if selection is None:
        return None
    return KubernetesSelector(
        qos=None if selection.qos is None else frozenset(QosClass(qos) for qos in selection.qos),
        namespaces=None if selection.namespaces is None else frozenset(selection.namespaces),
        exclude_namespaces=frozenset(selection.exclude_namespaces),
    )


def compile_trigger(trigger: TriggerModel) -> TriggerSpec:
    return TriggerSpec(
        kind=trigger.pressure,
        stall_us=trigger.stall_ms * US_PER_MS,
        window_us=trigger.window_ms * US_PER_MS,
        sustained_sec=float(trigger.sustained_sec),
    )


def compile_conditions(conditions: Optional[ConditionsModel]) -> Conditions:
    if conditions is None:
        return Conditions()
    return Conditions(
        min_reclaimable_fraction=conditions.min_reclaimable_fraction,
        memory_high_unset=conditions.memory_high_unset,
        min_usage_fraction_of_max=conditions.min_usage_fraction_of_max,
    )


def compile_action(action: ActionModel) -> ActionSpec:
    limits = RateLimit(cooldown_sec=float(action.cooldown_sec), max_per_hour=action.max_per_hour)
    if isinstance(action, ReclaimModel):
        return ReclaimAction(
            fraction=action.fraction,
            min_bytes=action.min_bytes,
            max_bytes=action.max_bytes,
            timeout_sec=float(action.timeout_sec),
            limits=limits,
            follow_up=None
            if action.follow_up is None
            else ReclaimFollowUp(
                every_sec=float(action.follow_up.every_sec),
                min_usage_fraction_of_max=action.follow_up.min_usage_fraction_of_max,
                for_sec=float(action.follow_up.for_sec),
            ),
        )
    if isinstance(action, MemoryHighModel):
        return MemoryHighAction(
            relative_to=action.relative_to,
            fraction=action.fraction,
            floor_margin_bytes=action.floor_margin_bytes,
            min_bytes=action.min_bytes,
            limits=limits,
            max_clamped_cgroups=action.max_clamped_cgroups,
        )
    if isinstance(action, VfsCachePressureModel):
        return VfsCachePressureAction(value=action.value, limits=limits)
    return DropCachesAction(mode=action.mode, limits=limits)
