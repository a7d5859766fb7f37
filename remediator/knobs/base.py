"""What every knob module shares: the plugin interface, the values a rung's plan looks at, and the
narrow writer interface a knob's write and restore are handed (tuned's plugins, h11's injected I/O).

A knob module (``remediator.knobs.<knob>``) owns one kernel value's whole life: its actions, its plan
(take, or decline with the reason), what the core remembers after the executor reported, its write and
restore through a ``KnobWriter``, and the file and format of its value. It does no I/O itself: the
executor hands it a writer, so a knob module imports no daemon, kernel or command module.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    FrozenSet,
    Generic,
    Mapping,
    Optional,
    Protocol,
    Tuple,
    TypeVar,
    Union,
    cast,
)

from remediator.core.state import ChangedValue, NodeState, PendingRung, TargetKey, TargetState
from remediator.core.wording import describe_target, target_record
from remediator.diagnosis.composition import MemoryComposition
from remediator.policy.compiled import Policy
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import Knob, Record, RecordType

OutcomeT_co = TypeVar("OutcomeT_co", covariant=True)


# Executor outcomes that mean the value is now (or, in dry-run, would be) in the kernel.
WRITTEN = frozenset({"applied", "partial"})
SIMULATED = "would"
# A failed restore leaves the value ours: asked again at the next calm observation.
RESTORE_RETRY = "failed"


def plain_value(value: Optional[int]) -> str:
    """A value as the kernel prints it ("max" for no limit)."""
    return "max" if value is None else str(value)


ActionT = TypeVar("ActionT", bound="Action")


class Action:
    """What the decision core asks the executor to do (every knob's actions derive from it).

    Actions are requests, not facts: the executor (the only writer) re-reads
    before writing, records originals before the first write, honours dry-run,
    and reports the outcome as a record. ``cause`` is the record the executor
    completes (with result, before/after, errno) so that enforcing and dry-run
    produce the same record, differing only in REMEDIATOR_DRY_RUN and "would".
    """

    __slots__ = ()
    cause: Record

    def with_cause(self: ActionT, cause: Record) -> ActionT:
        """The same request with another cause record (every concrete action is a frozen dataclass)."""
        return cast(ActionT, dataclasses.replace(cast(Any, self), cause=cause))


@dataclass(frozen=True)
class ReleaseOwnership(Action):
    """Forget the recorded original of ``file`` WITHOUT writing anything.

    Used when another writer (systemd, kubelet, an operator) changed a value
    we had changed: the value is theirs now, so restoring our recorded
    original later would fight them. ``cgroup`` is None for node-wide sysctls,
    and then ``file`` is the sysctl's name as in ``SetSysctl.name``
    (``"vfs_cache_pressure"``); for cgroups it is the interface file
    (``"memory.high"``).
    """

    cgroup: Optional[str]
    file: str
    cause: Record


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class RungContext:
    """Everything a rung's preconditions look at, gathered once per decision."""

    policy: Policy
    key: TargetKey
    snapshot: Union[CgroupSnapshot, NodeSnapshot]
    node: Optional[NodeSnapshot]
    composition: Optional[MemoryComposition]  # None for node targets
    reclaim_supported: bool
    evidence: Mapping[str, str]
    stall_text: str  # the measured stall vs the threshold, for messages
    owned_memory_high: Optional[ChangedValue]
    memory_high_barred: bool
    owned_vfs: Optional[ChangedValue]  # vfs_cache_pressure owned by this target
    vfs_owned_elsewhere: Optional[TargetKey]  # another target owns vfs_cache_pressure
    clamped_elsewhere: int = 0  # other cgroups of the policy holding a memory.high of ours

    @property
    def where(self) -> str:
        return describe_target(self.key.cgroup)

    def record(
        self, record_type: RecordType, message: str, action: Optional[Knob] = None, rung: Optional[int] = None
    ) -> Record:
        return target_record(self.policy, self.key, self.evidence, record_type, message, action, rung)


@dataclass(frozen=True)
class RungTake:
    """The rung's preconditions hold: this is the action (its cause is ACTION_APPLIED)."""

    action: Action


@dataclass(frozen=True)
class RungDecline:
    """The rung cannot help now. ``reason`` is a stable key (storm limiting); ``message`` explains."""

    reason: str
    message: str


RungOutcome = Union[RungTake, RungDecline]


# ---------------------------------------------------------------- guards of what a target owns


@dataclass(frozen=True)
class Look:
    """One look at one target, as a knob's guards of the values it owns see it (the core's turn
    hands it over on every look, pressure or calm)."""

    policy: Policy
    key: TargetKey
    snapshot: Union[CgroupSnapshot, NodeSnapshot]
    node: Optional[NodeSnapshot]  # the node's readings
    evidence: Mapping[str, str]
    now: float
    total_us: int  # the trigger's cumulative stall counter at this look

    @property
    def where(self) -> str:
        return describe_target(self.key.cgroup)

    def record(self, record_type: RecordType, message: str, action: Optional[Knob] = None) -> Record:
        return target_record(self.policy, self.key, self.evidence, record_type, message, action)


@dataclass(frozen=True)
class Holding:
    """What a target holds after a knob's guard: its state, the node's, and the actions asked."""

    target: TargetState
    node: NodeState
    actions: Tuple[Action, ...] = ()


# ---------------------------------------------------------------- writes


@dataclass(frozen=True)
class KnobFile:
    """A kernel file a knob reads or writes: a cgroup's interface file (``cgroup`` set), or a node-wide
    file under the proc root (``cgroup`` None, ``file`` relative to it, e.g. ``sys/vm/drop_caches``)."""

    cgroup: Optional[str]
    file: str

    @classmethod
    def vm_sysctl(cls, name: str) -> KnobFile:
        return cls(None, f"sys/vm/{name}")


class KnobWriter(Protocol, Generic[OutcomeT_co]):
    """The executor's services a knob's write uses, bound to one action (its record). A knob does not
    know whether it runs dry: the writer's files are the real ones or dry-run's overlay.

    ``OutcomeT_co`` is the executor's outcome type: a knob returns what ``finish``, ``set_owned`` or
    ``restore`` gave it.
    Every kernel error raised here is turned into an outcome by the executor.
    """

    @property
    def retry_budget_sec(self) -> float: ...

    def monotonic(self) -> float: ...

    def exists(self, target: KnobFile) -> bool: ...

    def read_uint(self, target: KnobFile) -> int:
        """Read a decimal value, retrying transient errors."""
        ...

    def write(
        self, target: KnobFile, text: str, retry_eagain: bool = True, budget_sec: Optional[float] = None
    ) -> None:
        """Write ``text``, retrying transient errors (in dry-run the files it goes to swallow it)."""
        ...

    def set_owned(
        self, knob: OwnedKnob, name: str, value: Optional[int], expected: Optional[int], check_expected: bool
    ) -> OutcomeT_co:
        """Re-read (stand back if not ``expected``), record the original before the first write
        (write-ahead), write, confirm: the value of ``name`` is ours until restored."""
        ...

    def restore(self, knob: OwnedKnob, name: str) -> OutcomeT_co:
        """Put back the original of ``name`` if the kernel still holds our value."""
        ...

    def finish(
        self,
        result: str,
        *,
        before: str = "",
        after: str = "",
        detail: str = "",
        extra: Optional[Dict[str, str]] = None,
    ) -> OutcomeT_co:
        """Complete the action's cause into its outcome record."""
        ...


@dataclass(frozen=True)
class OwnedKnob:
    """How a knob whose value is ours until restored is recognised: where it lives in the state file
    (``kind``), its file, how its value is read and printed, and how it is named in messages."""

    knob: Knob
    kind: str  # the state file's kind
    per_cgroup: bool  # the name is a cgroup (else the knob's own name)
    target: Callable[[str], KnobFile]
    limit: bool  # "max" means no limit (None); else a plain decimal
    format: Callable[[Optional[int]], str]  # a value in messages
    describe: Callable[[str], str]  # the value of ``name`` in messages
    refuse_zero: bool = False  # an original of 0 is someone's deliberate choice: never ours to change
    # The snapshot field that shows the file (of ``CgroupSnapshot`` if per_cgroup, else of ``NodeSnapshot``):
    # dry-run's overlay puts there what it answers for the file (``DryRunFiles.seen``). None: not shown.
    snapshot_field: Optional[str] = None


@dataclass(frozen=True)
class Verdict:
    """A rung's verdict with pressure still there (``remediator.core.decide`` step 5)."""

    rung: PendingRung
    snapshot: Union[CgroupSnapshot, NodeSnapshot]  # the look the verdict is made at
    now: float
    # The stall rate over the whole time since the rung was taken (None: not measurable).
    rate_since: Optional[float]
    trigger_kind: str

    @property
    def elapsed_sec(self) -> float:
        return self.now - self.rung.taken_at


class KnobPlugin(ABC):
    """One knob's whole life. Register an instance in ``remediator.knobs`` (the one registry).

    ``plan`` is handed the rung's policy spec (the knob's own ``ActionSpec`` class, whose ``kind`` is
    ``knob``); ``handles``, ``subject``, ``note`` and ``execute`` are handed the knob's own actions.
    """

    knob: Knob
    owned: Optional[OwnedKnob] = None  # None: a write-only knob, nothing to own or restore
    # The files this knob writes: the executor's confined writer allows these and no others.
    cgroup_writes: FrozenSet[str] = frozenset()  # a cgroup's interface files, by name
    node_writes: FrozenSet[str] = frozenset()  # node-wide files, by their path under the proc root

    @abstractmethod
    def handles(self, action: Action) -> bool:
        """Whether ``action`` is one of this knob's."""

    def subject(self, action: Action) -> Optional[str]:
        """The cgroup an action of this knob is about (None: node-wide)."""
        return None

    @abstractmethod
    def plan(self, spec: object, index: int, ctx: RungContext) -> RungOutcome:
        """Whether rung ``index`` (this knob's policy spec) can help now: the action, or the reason not."""

    def amount(self, action: Action) -> Optional[int]:
        """What ``action`` asks for in this knob's unit, for its verdict (None: nothing to measure)."""
        return None

    def repeat_reason(self, verdict: Verdict) -> Optional[str]:
        """Pressure is still there at the verdict of this knob's rung: why taking the same rung again
        helps more than escalating, from what was measured since it was taken (a sentence for the
        record); None escalates. Only a one-shot action whose effect the workload undoes (reclaim)
        has a reason to repeat."""
        return None

    def note(self, target: TargetState, node: NodeState, action: Action, result: str, now: float) -> Holding:
        """What the core remembers once the executor reported ``result`` for one of this knob's actions:
        the new states of the action's target (``subject`` under the cause's policy) and of the node."""
        return Holding(target, node)

    def holds(self, look: Look, target: TargetState, node: NodeState) -> bool:
        """Whether the target holds a value of this knob that is ours and not being restored."""
        return False

    def propose(
        self, look: Look, target: TargetState, node: NodeState, action: Action, rate: float
    ) -> Holding:
        """A rung of this knob was taken (``action``, at a stall ``rate``): what the core keeps until
        the executor reports, so that ``note`` can own the value with the evidence it was decided on."""
        return Holding(target, node)

    def release_if_changed(self, look: Look, target: TargetState, node: NodeState) -> Holding:
        """Another writer changed a value of ours: release it (never restore it), and say so."""
        return Holding(target, node)

    def back_off(self, look: Look, target: TargetState, node: NodeState) -> Holding:
        """A value of ours hurts the target it was meant to help: ask to restore it, and bar it."""
        return Holding(target, node)

    def restore_orphaned(
        self, look: Look, target: TargetState, node: NodeState, targets: Collection[TargetKey]
    ) -> Holding:
        """A node-wide value of ours whose owner is no longer among ``targets`` (gone, forgotten) has
        nobody left to roll it back: ask to restore it now."""
        return Holding(target, node)

    def calm_restore(self, look: Look, target: TargetState, node: NodeState, calm: str) -> Holding:
        """Calm lasted (``calm`` says how long): ask to put the target's values of this knob back."""
        return Holding(target, node)

    def exit_restores(
        self, targets: Mapping[TargetKey, TargetState], node: NodeState, wants_restore: Callable[[str], bool]
    ) -> Tuple[Mapping[TargetKey, TargetState], NodeState, Tuple[Action, ...]]:
        """The restores of this knob's owned values at a stop (or a reload dropping their policy),
        for owners whose policy ``wants_restore``; restores already in flight are not asked twice.
        Returns the targets whose states changed, the node's state, and the restores."""
        return {}, node, ()

    @abstractmethod
    def execute(self, action: Action, writer: KnobWriter[OutcomeT_co]) -> OutcomeT_co:
        """Carry out one of this knob's actions through ``writer``."""
