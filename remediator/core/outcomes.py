"""What the core learns after it decided: executor outcomes, gone cgroups, and the exit.

``note_outcome`` folds an action's result back into the caller's ``CoreState`` (a write makes a
value ours, a restore gives it back); ``forget`` drops a gone cgroup from it; both update the
table in place and touch only the action's target and the node. ``on_exit`` is pure, like
``decide``: it asks for the restores that policies want at a stop or when a reload drops them, and
returns the changed states for the caller to store (``CoreState.apply``).
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Dict, List, Mapping

from remediator.core.decide import Decision
from remediator.core.state import CoreState, TargetKey, TargetState
from remediator.knobs import plugin_for, plugins
from remediator.knobs.base import Action
from remediator.policy.compiled import Policy


def note_outcome(state: CoreState, action: Action, result: str, now: float) -> None:
    """Executor feedback for one action of a Decision, stored in ``state`` in place.

    ``result`` is one of applied, would (dry-run), partial, declined, failed,
    stood_back, gone, restored, not_restored.

    Each knob says what it remembers (``KnobPlugin.note`` in ``remediator.knobs``):
    a write of memory.high or vm.vfs_cache_pressure, applied, partial or would
    (dry-run), makes the target own the value (dry-run's snapshots show the
    value its overlay swallowed, so the core knows nothing of the mode); a
    restore drops ownership, except failed (the value is still ours, so the
    restore is asked again at the next calm observation that finds the calm
    period complete). Reclaim ends a follow-up that reclaimed
    nothing; drop_caches and ReleaseOwnership leave nothing to remember. A target
    no longer held (forgotten) stays forgotten.
    """
    plugin = plugin_for(action)
    if plugin is None:
        return
    key = TargetKey(action.cause.policy, plugin.subject(action))
    known = state.targets.get(key)
    held = plugin.note(known if known is not None else TargetState(), state.node, action, result, now)
    if known is not None:
        state.put(key, held.target)
    state.node = held.node


def forget(state: CoreState, key: TargetKey) -> None:
    """The cgroup is gone: drop everything about the target from ``state``, with no actions.

    A gone cgroup's memory.high needs no restore. A node-wide value it owns
    (vm.vfs_cache_pressure) is still changed on the node: it stays recorded
    and the next decision about any target restores it.
    """
    node = state.node
    if node.proposed_vfs is not None and node.proposed_vfs.owner == key:
        state.node = replace(node, proposed_vfs=None)
    state.drop(key)


def on_exit(policies: Mapping[str, Policy], state: CoreState, now: float) -> Decision:
    """Restores for every value owned under one of ``policies`` whose rollback.restore_on_exit is set.

    Only the given policies are considered, so the caller picks the scope: all
    loaded policies at shutdown, or just the removed/changed ones on reload
    (values owned under other policies are left alone). Restores already in
    flight are not asked twice. The records are the actions' causes. Each knob
    that owns values asks for its own (``KnobPlugin.exit_restores``), in the
    registry's order. ``state`` is not changed: the Decision holds the targets
    whose states changed, and the node's state.
    """
    actions: List[Action] = []
    changed: Dict[TargetKey, TargetState] = {}
    node = state.node

    def wants_restore(policy_name: str) -> bool:
        policy = policies.get(policy_name)
        return policy is not None and policy.rollback.restore_on_exit

    for plugin in plugins():
        targets = {**state.targets, **changed}  # the earlier knobs' changes; O(N), once per exit
        updated, node, restores = plugin.exit_restores(targets, node, wants_restore)
        changed.update(updated)
        actions.extend(restores)
    return Decision(
        targets=MappingProxyType(changed), node=node, actions=tuple(actions), records=(), wakeup_at=None
    )
