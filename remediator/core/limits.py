"""Step 4's rate limits of ``remediator.core.decide``: cooldowns, hourly caps, and the node-wide cap.

Pure functions of a target's and the node's state and ``now``: whether a limit holds a rung back
(the reason key and the sentence for its decline record), and when the limits that hold rungs back
run out (so the target is looked at again right then).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from remediator.core.state import CoreConfig, NodeState, TargetState
from remediator.policy.compiled import NODE_WIDE_KINDS, ActionSpec, Policy

HOUR_SEC = 3600.0


def recent(times: Tuple[float, ...], now: float) -> Tuple[float, ...]:
    """The times within the sliding hour before ``now``, oldest first."""
    return tuple(t for t in times if t > now - HOUR_SEC)


def limit_blocking(
    spec: ActionSpec,
    index: int,
    target: TargetState,
    node: NodeState,
    now: float,
    config: CoreConfig,
    where: str,
) -> Optional[Tuple[str, str]]:
    """The limit that holds rung ``index`` back now, as (reason key, message); None if none does."""
    limits = spec.limits
    times = recent(target.rung_taken_at.get(index, ()), now)
    if times and now - times[-1] < limits.cooldown_sec:
        left = times[-1] + limits.cooldown_sec - now
        return (
            "cooldown",
            f"{spec.kind} on {where} is in its cooldown ({limits.cooldown_sec:g} s, {left:.0f} s left)",
        )
    if len(times) >= limits.max_per_hour:
        return (
            "max_per_hour",
            f"{spec.kind} on {where} was taken {len(times)} times in the last hour "
            f"(max_per_hour {limits.max_per_hour})",
        )
    if spec.kind in NODE_WIDE_KINDS:
        node_times = recent(node.actions_at, now)
        if len(node_times) >= config.node_actions_max_per_hour:
            return (
                "node_rate_limit",
                f"node-wide action rate limit: {len(node_times)} node-wide actions in the last hour "
                f"across all policies (max {config.node_actions_max_per_hour})",
            )
    return None


def limit_expiries(
    policy: Policy, target: TargetState, node: NodeState, now: float, config: CoreConfig
) -> List[float]:
    """When rate limits that currently hold back a rung run out (to retry right then)."""
    expiries: List[float] = []
    node_times = recent(node.actions_at, now)
    for index, spec in enumerate(policy.ladder):
        times = recent(target.rung_taken_at.get(index, ()), now)
        limits = spec.limits
        if times and now - times[-1] < limits.cooldown_sec:
            expiries.append(times[-1] + limits.cooldown_sec)
        if 0 < limits.max_per_hour <= len(times):
            expiries.append(times[len(times) - limits.max_per_hour] + HOUR_SEC)
        node_max = config.node_actions_max_per_hour
        if spec.kind in NODE_WIDE_KINDS and 0 < node_max <= len(node_times):
            expiries.append(node_times[len(node_times) - node_max] + HOUR_SEC)
    return [t for t in expiries if t > now]
