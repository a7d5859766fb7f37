"""Target discovery: which (policy, cgroup) pairs to watch, and with which trigger.

One walk of the cgroup tree per call, however many policies there are: every
cgroup is matched against every policy's selector, and a cgroup selected by
several policies becomes one target per policy. Node policies need no walk;
they give one target each, ``TargetKey(policy, None)``.

Never selected, whatever the globs say:
- the cgroup the daemon itself runs in: reclaiming or throttling it would slow
  down the very process that is meant to relieve pressure;
- ``init.scope`` (PID 1 of systemd, or of a container's systemd at
  ``.../init.scope``): a stalled PID 1 stalls the whole machine or container;
- the root cgroup: it is the node; node policies watch it through
  ``/proc/pressure/memory``, and it has no ``memory.high``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from remediator.core.state import TargetKey
from remediator.identity import Identity, parse_cgroup
from remediator.kernel.psi_trigger import PsiTrigger
from remediator.kernel.roots import InvalidCgroupName, KernelRoots, normalize_cgroup
from remediator.policy.compiled import CgroupSelector, Policy

CgroupWalker = Callable[[KernelRoots], Iterable[str]]
"""Yields cgroup names relative to the root, like ``cgroup_tree.walk_cgroups``."""

Identify = Callable[[str], Identity]
"""A cgroup's identity: ``parse_cgroup`` (the path alone) or ``IdentityResolver.identify`` (pod names)."""

NEVER_SELECTED_NAMES = frozenset({"init.scope"})

# In /proc/<pid>/cgroup, the unified (v2) hierarchy is the line with id 0 and no controllers.
_UNIFIED_PREFIX = "0::"


@dataclass(frozen=True)
class Discovery:
    """What one walk found.

    ``targets``: what to watch, for enabled policies. ``selection_by_policy``:
    every cgroup policy's name (disabled ones too, for ``remediator check``) ->
    the cgroups it selects now, in walk order.
    """

    targets: Dict[TargetKey, PsiTrigger]
    selection_by_policy: Dict[str, Tuple[str, ...]]


def own_cgroup(roots: KernelRoots) -> Optional[str]:
    """The cgroup v2 this process runs in (from ``<proc_root>/self/cgroup``), or None if unknown."""
    try:
        text = (roots.proc_root / "self" / "cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(_UNIFIED_PREFIX):
            try:
                return normalize_cgroup(line[len(_UNIFIED_PREFIX) :])
            except InvalidCgroupName:
                return None
    return None


def _default_walk() -> CgroupWalker:
    # Imported late so that discovery can be tested with a scripted walker.
    from remediator.kernel.cgroup_tree import walk_cgroups

    return walk_cgroups


def _never_selected(cgroup: str, daemon_cgroup: Optional[str]) -> bool:
    if cgroup in ("", daemon_cgroup):
        return True
    return cgroup.rsplit("/", 1)[-1] in NEVER_SELECTED_NAMES


def discover(
    roots: KernelRoots,
    policies: Sequence[Policy],
    walk: Optional[CgroupWalker] = None,
    identify: Identify = parse_cgroup,
) -> Discovery:
    """Walk the tree once and apply every policy to it; see the module docstring.

    A policy with ``target.kubernetes`` selects by the cgroup's identity
    (``CgroupSelector.selects``), asked for once per cgroup and only when such
    a policy's globs match it; the others by their globs alone.

    Raises the walker's ``KernelError`` when the tree cannot be listed: a
    partial walk would look like cgroups disappearing, so the caller should
    keep the targets it has.
    """
    targets: Dict[TargetKey, PsiTrigger] = {}
    selections: Dict[str, List[str]] = {}
    cgroup_policies: List[Tuple[Policy, CgroupSelector]] = []
    for policy in policies:
        if isinstance(policy.target, CgroupSelector):
            cgroup_policies.append((policy, policy.target))
            selections[policy.name] = []
        elif policy.enabled:
            targets[TargetKey(policy.name, None)] = policy.trigger.psi
    if cgroup_policies:
        daemon_cgroup = own_cgroup(roots)
        walker = walk if walk is not None else _default_walk()
        for cgroup in walker(roots):
            if _never_selected(cgroup, daemon_cgroup):
                continue
            identity: Optional[Identity] = None
            for policy, selector in cgroup_policies:
                if not selector.matches(cgroup):
                    continue
                if selector.kubernetes is not None:
                    identity = identity if identity is not None else identify(cgroup)
                    if not selector.kubernetes.matches(identity):
                        continue
                selections[policy.name].append(cgroup)
                if policy.enabled:
                    targets[TargetKey(policy.name, cgroup)] = policy.trigger.psi
    return Discovery(targets, {name: tuple(names) for name, names in selections.items()})


def desired_targets(
    roots: KernelRoots,
    policies: Sequence[Policy],
    walk: Optional[CgroupWalker] = None,
    identify: Identify = parse_cgroup,
) -> Dict[TargetKey, PsiTrigger]:
    """What the watcher should watch now: (enabled policy, cgroup or None for the node) -> trigger."""
    return discover(roots, policies, walk, identify).targets


def selection_by_policy(
    roots: KernelRoots,
    policies: Sequence[Policy],
    walk: Optional[CgroupWalker] = None,
    identify: Identify = parse_cgroup,
) -> Dict[str, Tuple[str, ...]]:
    """Cgroup policy name (enabled or not) -> the cgroups it selects now; for ``remediator check``."""
    return discover(roots, policies, walk, identify).selection_by_policy


__all__ = [
    "CgroupWalker",
    "Discovery",
    "NEVER_SELECTED_NAMES",
    "desired_targets",
    "discover",
    "own_cgroup",
    "selection_by_policy",
]
