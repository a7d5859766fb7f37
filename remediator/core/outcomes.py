"""What the core learns after it decided: executor outcomes, gone cgroups, and the exit.

``note_outcome`` folds an action's result back into the state (a write makes a
value ours, a restore gives it back); ``forget`` drops a gone cgroup; ``on_exit``
asks for the restores that policies want at a stop or when a reload drops them.
Pure, like ``decide``: state in, state (and, for the exit, actions) out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Mapping

from remediator.core.decide import Decision
from remediator.core.state import CoreState, TargetKey
from remediator.knobs import plugin_for, plugins
from remediator.knobs.base import Action
from remediator.policy.compiled import Policy


def note_outcome(state: CoreState, action: Action, result: str, now: float) -> CoreState:
    """Executor feedback for one action of a Decision.

    ``result`` is one of applied, would (dry-run), partial, declined, failed,
    stood_back, gone, restored, not_restored.

    Each knob says what it remembers (``KnobPlugin.note`` in ``remediator.knobs``):
    a write of memory.high or vm.vfs_cache_pressure, applied or partial, makes
    the target own the value; would (dry-run) does the same but marks it
    simulated (the kernel still holds the old value, and the other-writer check
    compares with that); a restore drops ownership, except failed (the value is
    still ours, so the restore is asked again at the next calm observation that
    finds the calm period complete). Reclaim ends a follow-up that reclaimed
    nothing; drop_caches and ReleaseOwnership leave nothing to remember.
    """
    plugin = plugin_for(action)
    if plugin is not None:
        return plugin.note(state, action, result, now)
    return state


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
    flight are not asked twice. The records are the actions' causes. Each knob
    that owns values asks for its own (``KnobPlugin.exit_restores``), in the
    registry's order.
    """
    actions: List[Action] = []
    new_state = state

    def wants_restore(policy_name: str) -> bool:
        policy = policies.get(policy_name)
        return policy is not None and policy.rollback.restore_on_exit

    for plugin in plugins():
        new_state, restores = plugin.exit_restores(new_state, wants_restore)
        actions.extend(restores)
    return Decision(state=new_state, actions=tuple(actions), records=(), wakeup_at=None)
