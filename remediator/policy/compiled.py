"""Compiled policies: the runtime form the decision core and the watcher use.

Produced only by ``remediator.policy.compile`` from validated models, so every
invariant the models check (stall <= window, fractions in (0, 1], ...) holds
here and is not re-checked. Durations are float seconds, sizes are bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Tuple, Union

from remediator.identity import Identity, QosClass
from remediator.kernel.psi_trigger import PsiTrigger, StallKind


@dataclass(frozen=True)
class TriggerSpec:
    """A policy's pressure trigger: the kernel trigger, plus how long it must be sustained."""

    kind: StallKind
    stall_us: int
    window_us: int
    sustained_sec: float = 0.0

    @property
    def psi(self) -> PsiTrigger:
        """What the watcher arms (sustained_sec is the core's business, not the kernel's)."""
        return PsiTrigger(self.kind, self.stall_us, self.window_us)

    @property
    def threshold_fraction(self) -> float:
        """Stall share of wall time that counts as "under pressure" (stall / window)."""
        return self.psi.threshold_fraction


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a cgroup glob: ``*`` and ``?`` stay inside one path component,
    ``**`` spans any number of components (including none), ``[...]`` is a class."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    # "**/" matches zero or more whole components.
                    out.append("(?:[^/]+/)*")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class KubernetesSelector:
    """``target.kubernetes``: which Kubernetes cgroups, by QoS class and namespace.

    ``None`` means "any". A cgroup that is not Kubernetes' (``identity.kubernetes``
    false) always matches: the selector narrows pods, it does not exclude services.
    With namespaces to select or exclude, a Kubernetes cgroup whose namespace is
    unknown does not match: unknown is not "outside kube-system".
    """

    qos: Optional[FrozenSet[QosClass]] = None
    namespaces: Optional[FrozenSet[str]] = None
    exclude_namespaces: FrozenSet[str] = frozenset()

    def matches(self, identity: Identity) -> bool:
        if not identity.kubernetes:
            return True
        if self.qos is not None and identity.qos_class not in self.qos:
            return False
        if self.namespaces is None and not self.exclude_namespaces:
            return True
        namespace = identity.pod_namespace
        if namespace is None:
            return False
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        return namespace not in self.exclude_namespaces


@dataclass(frozen=True)
class CgroupSelector:
    """Which cgroups a policy watches: globs relative to the cgroup root, narrowed for Kubernetes."""

    include: Tuple[str, ...]
    exclude: Tuple[str, ...] = ()
    kubernetes: Optional[KubernetesSelector] = None
    _include_re: Tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _exclude_re: Tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include_re", tuple(glob_to_regex(p) for p in self.include))
        object.__setattr__(self, "_exclude_re", tuple(glob_to_regex(p) for p in self.exclude))

    def matches(self, cgroup: str) -> bool:
        """The globs alone (no identity needed)."""
        if not any(r.match(cgroup) for r in self._include_re):
            return False
        return not any(r.match(cgroup) for r in self._exclude_re)

    def selects(self, identity: Identity) -> bool:
        """The globs on ``identity.cgroup``, then ``kubernetes`` on the identity."""
        if not self.matches(identity.cgroup):
            return False
        return self.kubernetes is None or self.kubernetes.matches(identity)


@dataclass(frozen=True)
class NodeTarget:
    """The node itself, watched through ``/proc/pressure/memory``."""


Target = Union[CgroupSelector, NodeTarget]


@dataclass(frozen=True)
class Conditions:
    """Preconditions on what the memory is made of; ``None`` = not checked.

    All must hold for the policy to act. They are evaluated on a fresh snapshot.
    """

    min_reclaimable_fraction: Optional[float] = None  # reclaimable cache / memory.current
    memory_high_unset: Optional[bool] = None
    min_usage_fraction_of_max: Optional[float] = None  # memory.current / memory.max


@dataclass(frozen=True)
class RateLimit:
    cooldown_sec: float
    max_per_hour: int


@dataclass(frozen=True)
class ReclaimFollowUp:
    """After a pressure the reclaim relieved: look every ``every_sec`` for ``for_sec`` and reclaim
    again once memory.current reaches ``min_usage_fraction_of_max`` of memory.max."""

    every_sec: float
    min_usage_fraction_of_max: float
    for_sec: float


@dataclass(frozen=True)
class ReclaimAction:
    """Write ``memory.reclaim``: ``fraction`` of the reclaimable-cache estimate, capped."""

    fraction: float
    min_bytes: int  # below this much reclaimable cache, skip (with a record)
    max_bytes: Optional[int]  # cap per write
    timeout_sec: float  # time budget for the write
    limits: RateLimit
    follow_up: Optional[ReclaimFollowUp] = None
    kind: str = field(default="reclaim", init=False)


@dataclass(frozen=True)
class MemoryHighAction:
    """Set ``memory.high`` to ``fraction`` x (memory.max | memory.current), never below the floor."""

    relative_to: str  # "max" | "current"
    fraction: float
    floor_margin_bytes: int  # added to the unreclaimable floor
    min_bytes: Optional[int]  # explicit floor set by the operator
    limits: RateLimit
    kind: str = field(default="memory_high", init=False)


@dataclass(frozen=True)
class VfsCachePressureAction:
    """Node-wide ``vm.vfs_cache_pressure``; restored when the calm returns."""

    value: int
    limits: RateLimit
    kind: str = field(default="vfs_cache_pressure", init=False)


@dataclass(frozen=True)
class DropCachesAction:
    """Node-wide ``vm.drop_caches`` (1 page cache, 2 slab, 3 both); not reversible, rate-limited."""

    mode: int
    limits: RateLimit
    kind: str = field(default="drop_caches", init=False)


ActionSpec = Union[ReclaimAction, MemoryHighAction, VfsCachePressureAction, DropCachesAction]

NODE_WIDE_KINDS = frozenset({"vfs_cache_pressure", "drop_caches"})


@dataclass(frozen=True)
class Rollback:
    calm_sec: float  # pressure must stay below the threshold this long before changes are undone
    restore_on_exit: bool


@dataclass(frozen=True)
class Policy:
    name: str
    source: str  # the file it came from, for records
    target: Target
    trigger: TriggerSpec
    conditions: Conditions
    ladder: Tuple[ActionSpec, ...]
    verify_sec: float  # after a rung, wait this long for pressure to fall before the next
    rollback: Rollback
    # Node-wide rungs in a cgroup policy only when the operator says so.
    allow_node_wide: bool = False
    description: str = ""
    # Disabled policies are loaded and checked but not run.
    enabled: bool = True

    @property
    def is_node(self) -> bool:
        return isinstance(self.target, NodeTarget)
