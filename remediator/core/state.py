"""The decision core's memory: immutable values, replaced (never mutated) by each decision.

Everything the core needs to remember between two observations of a target
lives here: the PSI baseline, the current pressure episode, the rung that is
waiting to be verified, when each rung was last taken (cooldowns and hourly
limits), which values we own (so they can be rolled back, and so we notice
when another writer takes them over) and when a declined record was last
emitted (so a pressured cgroup does not flood the journal).

All containers are tuples or read-only mappings built fresh by the ``with_*``
helpers, so a test can keep the state before a decision and compare it with
the state after.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Tuple, TypeVar, Union

from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import Knob

K = TypeVar("K")
V = TypeVar("V")


def frozen_mapping(items: Mapping[K, V]) -> Mapping[K, V]:
    """A read-only copy: the state's mappings are values, not shared buffers."""
    return MappingProxyType(dict(items))


def _empty_mapping() -> Mapping[K, V]:
    return MappingProxyType({})


def _copy_of(items: Mapping[K, V]) -> Dict[K, V]:
    """A mutable copy. A read-only view copies its dict directly, reusing the stored
    hashes; dict(view) would hash every key again (~40x slower at 2000 targets), and
    the core copies the targets mapping once per decision."""
    if isinstance(items, MappingProxyType):
        return items.copy()
    return dict(items)


@dataclass(frozen=True)
class TargetKey:
    """One watched thing: a policy applied to one cgroup, or to the node (``cgroup`` None)."""

    policy: str
    cgroup: Optional[str]


@dataclass(frozen=True)
class Observation:
    """One fresh read of a target, and why it was taken.

    ``fired`` is True when a kernel PSI trigger event prompted the read, False
    for a timed check (a ``wakeup_at`` the core asked for, or the sampler when
    the kernel refuses triggers).
    """

    key: TargetKey
    snapshot: Union[CgroupSnapshot, NodeSnapshot]
    node: Optional[NodeSnapshot]
    fired: bool
    reclaim_supported: bool = True


@dataclass(frozen=True)
class CoreConfig:
    """Daemon-wide limits that no single policy can see."""

    # Node-wide actions (vfs_cache_pressure, drop_caches) hit every tenant: at
    # most this many in any sliding hour, across all policies together.
    node_actions_max_per_hour: int = 4


@dataclass(frozen=True)
class PendingRung:
    """A rung we took and whose effect is not judged yet (judged at taken_at + verify_sec)."""

    index: int
    kind: Knob
    taken_at: float
    stall_rate: float  # share of wall time stalled when the rung was taken
    follow_up: bool = False  # a reclaim follow-up (taken on a calm look), not an answer to pressure


@dataclass(frozen=True)
class ProposedWrite:
    """A write we asked the executor for; it becomes an ``ChangedValue`` once the
    executor reports it applied (or would have applied it, in dry-run)."""

    value: int
    stall_rate: float
    events_high: int  # memory.events "high" when we asked; 0 for sysctls
    # When we asked and the trigger kind's cumulative stall then (one observation's time and total).
    stall_baseline: Optional[Tuple[float, int]] = None


@dataclass(frozen=True)
class ChangedValue:
    """The core's view of a value it decided to change: what it expects the kernel to hold, and
    the evidence the write was decided on (for the back-off). Who owns the value, and its original,
    is the state store's alone (``remediator.daemon.state_store.OwnedValue``)."""

    ours: int
    before: Optional[int]  # the value before our first write (None = "max")
    simulated: bool  # dry-run: the kernel still holds ``before``
    written_at: float
    stall_rate_at_write: float
    events_high_at_write: Optional[int]  # None when unknown: no back-off judgement possible
    # ProposedWrite.stall_baseline: the back-off judges the stall rate over the whole time since
    # the write was decided, not over the last (possibly milliseconds-long) interval.
    stall_baseline: Optional[Tuple[float, int]] = None
    restore_requested: bool = False  # a restore is in flight; do not ask twice

    @property
    def expected(self) -> Optional[int]:
        """What the kernel file should read if nobody else touched it."""
        return self.before if self.simulated else self.ours


@dataclass(frozen=True)
class TargetState:
    """What the core remembers about one target."""

    # PSI baseline: the previous observation's cumulative stall and time.
    last_total_us: Optional[int] = None
    last_at: Optional[float] = None
    # (time, cumulative stall) of the looks within the trigger's last two windows, plus the newest
    # one before: a trigger event is checked against the stall the kernel can have counted for it,
    # which starts before the last look when that look was recent.
    recent_looks: Tuple[Tuple[float, int], ...] = ()
    # The open pressure episode (None = not pressured) and whether its
    # PRESSURE_CONFIRMED record was emitted.
    pressured_since: Optional[float] = None
    confirmed_recorded: bool = False
    calm_since: Optional[float] = None
    rung: Optional[PendingRung] = None
    # Per rung index: when it was taken within the last hour (cooldown, max_per_hour).
    rung_taken_at: Mapping[int, Tuple[float, ...]] = field(default_factory=_empty_mapping)
    # Per decline reason: when its record was last emitted (storm limit).
    declined_at: Mapping[str, float] = field(default_factory=_empty_mapping)
    memory_high: Optional[ChangedValue] = None
    proposed_memory_high: Optional[ProposedWrite] = None
    # Set when our memory.high caused throttling: not used again until a full calm period.
    memory_high_barred: bool = False
    # When a reclaim with follow_up relieved a pressure: its follow-up period runs from here.
    follow_up_since: Optional[float] = None
    # For records emitted without a fresh read (on exit).
    last_snapshot: Optional[Union[CgroupSnapshot, NodeSnapshot]] = None

    def with_rung_taken(self, index: int, now: float, horizon: float) -> TargetState:
        times = (*(t for t in self.rung_taken_at.get(index, ()) if t > now - horizon), now)
        taken = dict(self.rung_taken_at)
        taken[index] = times
        return replace(self, rung_taken_at=frozen_mapping(taken))

    def with_declined(self, reason: str, now: float, horizon: float) -> TargetState:
        # Entries older than the storm horizon no longer suppress anything: drop them
        # so the mapping stays as small as the set of reasons currently firing.
        kept = {r: t for r, t in self.declined_at.items() if t > now - horizon}
        kept[reason] = now
        return replace(self, declined_at=frozen_mapping(kept))


@dataclass(frozen=True)
class ProposedSysctl:
    """A vfs_cache_pressure write asked for by ``owner``, waiting for its outcome."""

    owner: TargetKey
    write: ProposedWrite
    before: int


@dataclass(frozen=True)
class NodeState:
    """Node-wide memory shared by all policies."""

    # When node-wide actions were taken within the last hour (global rate limit).
    actions_at: Tuple[float, ...] = ()
    # vm.vfs_cache_pressure has one owner at a time across all policies.
    vfs_owner: Optional[TargetKey] = None
    vfs_cache_pressure: Optional[ChangedValue] = None
    proposed_vfs: Optional[ProposedSysctl] = None


@dataclass(frozen=True)
class CoreState:
    targets: Mapping[TargetKey, TargetState] = field(default_factory=_empty_mapping)
    node: NodeState = field(default_factory=NodeState)

    def target(self, key: TargetKey) -> TargetState:
        return self.targets.get(key, TargetState())

    def with_target(self, key: TargetKey, target: TargetState) -> CoreState:
        targets = _copy_of(self.targets)
        targets[key] = target
        # Already a fresh copy: wrapping it is enough.
        return replace(self, targets=MappingProxyType(targets))

    def without_target(self, key: TargetKey) -> CoreState:
        targets = {k: v for k, v in self.targets.items() if k != key}
        return replace(self, targets=frozen_mapping(targets))

    def with_node(self, node: NodeState) -> CoreState:
        return replace(self, node=node)


def initial_state() -> CoreState:
    """The state before anything was observed: no baselines, nothing owned."""
    return CoreState()
