"""The decision core's memory: immutable values per target and for the node, replaced (never
mutated) by each decision, and the caller's table that holds them (``CoreState``).

Everything the core needs to remember between two observations of a target
lives here: the PSI baseline, the current pressure episode, the rung that is
waiting to be verified, when each rung was last taken (cooldowns and hourly
limits), which values we own (so they can be rolled back, and so we notice
when another writer takes them over) and when a declined record was last
emitted (so a pressured cgroup does not flood the journal).

A target's and the node's containers are tuples or read-only mappings built fresh by the
``with_*`` helpers, so a test can keep a target's state before a decision and compare it with
the state after. A decision takes one target's state and the node's (``TargetView``) and returns
the new ones; the caller stores them in its ``CoreState`` in place, so a decision's cost does not
depend on how many targets there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Collection, Dict, Mapping, Optional, Protocol, Tuple, TypeVar, Union

from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import Knob

K = TypeVar("K")
V = TypeVar("V")


def frozen_mapping(items: Mapping[K, V]) -> Mapping[K, V]:
    """A read-only copy: the state's mappings are values, not shared buffers."""
    return MappingProxyType(dict(items))


def _empty_mapping() -> Mapping[K, V]:
    return MappingProxyType({})


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
    # The trigger kind's cumulative stall when the rung was taken: the verdict measures the stall
    # rate over the whole time since, not over the last (possibly milliseconds-long) interval.
    stall_total_us: Optional[int] = None
    # The stall rate of the pressure this rung answers before any reclaim of its chain (a repeat
    # and a follow-up carry it on): what "the rung helped in part" is measured against.
    unrelieved_rate: Optional[float] = None
    # What the rung asked for in its knob's unit (reclaim: bytes), and the snapshot it was planned
    # on: its knob judges the verdict from what changed since (``KnobPlugin.repeat_reason``).
    amount: Optional[int] = None
    taken_snapshot: Optional[Union[CgroupSnapshot, NodeSnapshot]] = None


@dataclass(frozen=True)
class FollowUpPeriod:
    """A reclaim relieved a pressure at ``since``: reclaim again as the cache refills, until
    ``since`` + follow_up.for_sec (``remediator.core.decide`` step 10)."""

    since: float
    # The relieved pressure's stall rate before any reclaim (``PendingRung.unrelieved_rate``).
    unrelieved_rate: Optional[float] = None


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
    written_at: float
    stall_rate_at_write: float
    events_high_at_write: Optional[int]  # None when unknown: no back-off judgement possible
    # ProposedWrite.stall_baseline: the back-off judges the stall rate over the whole time since
    # the write was decided, not over the last (possibly milliseconds-long) interval.
    stall_baseline: Optional[Tuple[float, int]] = None
    restore_requested: bool = False  # a restore is in flight; do not ask twice


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
    # A reclaim with follow_up relieved a pressure: its follow-up period.
    follow_up: Optional[FollowUpPeriod] = None
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
class TargetView:
    """What one decision sees: the target's own state and the small node-wide state, plus the
    cross-target facts it needs, all taken in O(1) from the caller's ``CoreState``.

    A decision never sees the other targets' states, so its cost does not grow with their number.
    """

    target: TargetState
    node: NodeState
    # Other targets of this policy holding a memory.high of ours (for max_clamped_cgroups).
    clamped_elsewhere: int = 0
    # The keys the caller holds a state for, for membership only (is an owner still watched?).
    watched: Collection[TargetKey] = ()


class CoreState:
    """The caller's memory of every target: a table of ``TargetState`` values and the ``NodeState``.

    The decision core never receives this table whole: ``view`` gives a decision its one target and
    the node-wide facts, and the caller stores what the decision returns with ``apply`` (in place,
    O(1) per target: nothing is copied per decision). The values stored are immutable; the table is
    not. The number of targets holding a memory.high of ours is kept per policy as values are
    stored, so no decision has to count it across targets.
    """

    def __init__(self) -> None:
        self._targets: Dict[TargetKey, TargetState] = {}
        self._clamped: Dict[str, int] = {}
        self.node = NodeState()

    def __repr__(self) -> str:
        return f"CoreState(targets={self._targets!r}, node={self.node!r})"

    @property
    def targets(self) -> Mapping[TargetKey, TargetState]:
        """A read-only view of the table (live: it shows later stores)."""
        return MappingProxyType(self._targets)

    def target(self, key: TargetKey) -> TargetState:
        return self._targets.get(key, TargetState())

    def clamped(self, policy: str) -> int:
        """How many targets of ``policy`` hold a memory.high of ours."""
        return self._clamped.get(policy, 0)

    def view(self, key: TargetKey) -> TargetView:
        """What a decision about ``key`` sees."""
        target = self.target(key)
        own = 1 if target.memory_high is not None else 0
        return TargetView(target, self.node, self.clamped(key.policy) - own, self._targets.keys())

    def put(self, key: TargetKey, target: TargetState) -> None:
        """Store the target's new state in place."""
        self._count(key, self._targets.get(key), -1)
        self._targets[key] = target
        self._count(key, target, 1)

    def drop(self, key: TargetKey) -> None:
        """Forget the target (nothing if it is not held)."""
        self._count(key, self._targets.pop(key, None), -1)

    def apply(self, decision: Changes) -> None:
        """Store a decision's new target states and node state."""
        for key, target in decision.targets.items():
            self.put(key, target)
        self.node = decision.node

    def copy(self) -> CoreState:
        """An independent table holding the same (immutable) values: O(N), for benchmarks and tests."""
        new = CoreState()
        new._targets = dict(self._targets)
        new._clamped = dict(self._clamped)
        new.node = self.node
        return new

    def _count(self, key: TargetKey, target: Optional[TargetState], sign: int) -> None:
        if target is not None and target.memory_high is not None:
            self._clamped[key.policy] = self._clamped.get(key.policy, 0) + sign


class Changes(Protocol):
    """What ``CoreState.apply`` stores: the targets a decision changed, and the node state after it."""

    @property
    def targets(self) -> Mapping[TargetKey, TargetState]: ...

    @property
    def node(self) -> NodeState: ...


def initial_state() -> CoreState:
    """The state before anything was observed: no baselines, nothing owned."""
    return CoreState()
