"""Builders for the decision-core tests: snapshots, policies, and a scripted driver.

The driver plays watcher and executor around the pure core: it feeds
observations at explicit ``now`` values, feeds every action's outcome back
through ``note_outcome`` and, like the kernel, makes memory.high show what
was written (enforcing) or keeps the original (dry-run). No test here sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from remediator.core.decide import Decision, decide
from remediator.core.outcomes import note_outcome
from remediator.core.state import CoreConfig, CoreState, Observation, TargetKey, initial_state
from remediator.kernel.psi_trigger import StallKind
from remediator.knobs.base import Action, ReleaseOwnership
from remediator.knobs.memory_high import RestoreMemoryHigh, SetMemoryHigh
from remediator.knobs.reclaim import Reclaim
from remediator.knobs.sysctl import RestoreSysctl, SetSysctl
from remediator.policy.compiled import (
    ActionSpec,
    CgroupSelector,
    Conditions,
    DropCachesAction,
    MemoryHighAction,
    NodeTarget,
    Policy,
    RateLimit,
    ReclaimAction,
    ReclaimFollowUp,
    Rollback,
    TriggerSpec,
    VfsCachePressureAction,
)
from remediator.readings import (
    CgroupSnapshot,
    MemoryEvents,
    MemoryStat,
    NodeSnapshot,
    Pressure,
    PressureLine,
)
from remediator.records import Knob, Record, RecordType

MiB = 1024 * 1024
GiB = 1024 * MiB
CGROUP = "system.slice/app.service"

# 150 ms per 1 s: pressured at a 15 % stall share.
STALL_US = 150_000
WINDOW_US = 1_000_000

CACHE_HEAVY_STAT: Mapping[str, int] = {
    "anon": 1 * GiB,
    "file": 2 * GiB,
    "active_file": 1 * GiB,
    "inactive_file": 1 * GiB,
    "shmem": 0,
    "kernel": 64 * MiB,
    "slab_reclaimable": 16 * MiB,
}


def pressure(full_total_us: int, some_total_us: Optional[int] = None, with_full: bool = True) -> Pressure:
    some_total = some_total_us if some_total_us is not None else full_total_us
    return Pressure(
        some=PressureLine(avg10=50.0, avg60=20.0, avg300=5.0, total_us=some_total),
        full=PressureLine(avg10=20.0, avg60=10.0, avg300=2.0, total_us=full_total_us) if with_full else None,
    )


def cgroup_snapshot(
    full_total_us: int = 0,
    *,
    cgroup: str = CGROUP,
    current: int = 3 * GiB + 64 * MiB,
    max_bytes: Optional[int] = 4 * GiB,
    high: Optional[int] = None,
    swap_max: Optional[int] = None,
    stat: Optional[Mapping[str, int]] = None,
    events_high: int = 0,
    events_high_local: Optional[int] = None,
    some_total_us: Optional[int] = None,
    with_full: bool = True,
) -> CgroupSnapshot:
    return CgroupSnapshot(
        cgroup=cgroup,
        current_bytes=current,
        max_bytes=max_bytes,
        high_bytes=high,
        min_bytes=0,
        low_bytes=0,
        swap_max_bytes=swap_max,
        stat=MemoryStat(dict(stat if stat is not None else CACHE_HEAVY_STAT)),
        events=MemoryEvents(high=events_high),
        pressure=pressure(full_total_us, some_total_us, with_full),
        # By default the cgroup's own counter moves with the hierarchical one (no children).
        events_local=MemoryEvents(high=events_high if events_high_local is None else events_high_local),
    )


def node_snapshot(full_total_us: int = 0, *, vfs: Optional[int] = 100, swap_total: int = 0) -> NodeSnapshot:
    return NodeSnapshot(
        pressure=pressure(full_total_us),
        mem_total_bytes=16 * GiB,
        mem_available_bytes=4 * GiB,
        swap_total_bytes=swap_total,
        swap_free_bytes=swap_total,
        slab_reclaimable_bytes=512 * MiB,
        vfs_cache_pressure=vfs,
    )


def limits(cooldown_sec: float = 300.0, max_per_hour: int = 6) -> RateLimit:
    return RateLimit(cooldown_sec=cooldown_sec, max_per_hour=max_per_hour)


def reclaim_rung(
    fraction: float = 0.5,
    min_bytes: int = 64 * MiB,
    max_bytes: Optional[int] = None,
    cooldown_sec: float = 300.0,
    max_per_hour: int = 6,
    follow_up: Optional[ReclaimFollowUp] = None,
) -> ReclaimAction:
    return ReclaimAction(
        fraction=fraction,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        timeout_sec=10.0,
        limits=limits(cooldown_sec, max_per_hour),
        follow_up=follow_up,
    )


def memory_high_rung(
    fraction: float = 0.8,
    relative_to: str = "max",
    floor_margin_bytes: int = 64 * MiB,
    min_bytes: Optional[int] = None,
    cooldown_sec: float = 300.0,
    max_per_hour: int = 6,
    max_clamped_cgroups: int = 100,
) -> MemoryHighAction:
    return MemoryHighAction(
        relative_to=relative_to,
        fraction=fraction,
        floor_margin_bytes=floor_margin_bytes,
        min_bytes=min_bytes,
        limits=limits(cooldown_sec, max_per_hour),
        max_clamped_cgroups=max_clamped_cgroups,
    )


def vfs_cache_pressure_rung(
    value: int = 200, cooldown_sec: float = 600.0, max_per_hour: int = 4
) -> VfsCachePressureAction:
    return VfsCachePressureAction(value=value, limits=limits(cooldown_sec, max_per_hour))


def drop_caches_rung(mode: int = 1, cooldown_sec: float = 60.0, max_per_hour: int = 10) -> DropCachesAction:
    return DropCachesAction(mode=mode, limits=limits(cooldown_sec, max_per_hour))


def make_policy(
    *ladder: ActionSpec,
    name: str = "cache-hog",
    node: bool = False,
    sustained_sec: float = 0.0,
    verify_sec: float = 30.0,
    calm_sec: float = 120.0,
    restore_on_exit: bool = True,
    conditions: Conditions = Conditions(),  # noqa: B008 - frozen dataclass, safe as a default
    allow_node_wide: bool = False,
    kind: StallKind = "full",
) -> Policy:
    return Policy(
        name=name,
        source=f"/etc/remediator/policies.d/{name}.yaml",
        target=NodeTarget() if node else CgroupSelector(include=("system.slice/*",)),
        trigger=TriggerSpec(kind=kind, stall_us=STALL_US, window_us=WINDOW_US, sustained_sec=sustained_sec),
        conditions=conditions,
        ladder=ladder if ladder else (reclaim_rung(),),
        verify_sec=verify_sec,
        rollback=Rollback(calm_sec=calm_sec, restore_on_exit=restore_on_exit),
        allow_node_wide=allow_node_wide,
    )


def types_of(records: Tuple[Record, ...]) -> List[RecordType]:
    return [r.type for r in records]


@dataclass
class Driver:
    """Plays watcher + executor around the core for one target at explicit times.

    ``share`` is the stall share of wall time since the previous observation:
    the cumulative PSI total grows by ``share * dt`` seconds.
    """

    policy: Policy
    mode: str = "applied"  # what the executor reports for writes: "applied" or "would"
    cgroup: Optional[str] = CGROUP
    config: CoreConfig = field(default_factory=CoreConfig)
    state: CoreState = field(default_factory=initial_state)
    snapshot_overrides: Dict[str, object] = field(default_factory=dict)
    node_vfs: Optional[int] = 100
    kernel_high: Optional[int] = None  # what memory.high reads in the (imaginary) kernel, or overlay
    total_us: int = 0
    last_now: Optional[float] = None
    events_high: int = 0
    history: List[Decision] = field(default_factory=list)

    @property
    def key(self) -> TargetKey:
        return TargetKey(self.policy.name, self.cgroup)

    def observe(
        self, now: float, share: float = 0.0, *, fired: bool = False, reclaim_supported: bool = True
    ) -> Decision:
        if self.last_now is not None:
            self.total_us += int(share * (now - self.last_now) * 1e6)
        self.last_now = now
        node = node_snapshot(self.total_us, vfs=self.node_vfs)
        snapshot: object
        if self.cgroup is None:
            snapshot = node
        else:
            fields: Dict[str, object] = {"high": self.kernel_high, "events_high": self.events_high}
            fields.update(self.snapshot_overrides)
            snapshot = cgroup_snapshot(self.total_us, cgroup=self.cgroup, **fields)  # type: ignore[arg-type]
        assert isinstance(snapshot, (CgroupSnapshot, NodeSnapshot))
        obs = Observation(
            key=self.key, snapshot=snapshot, node=node, fired=fired, reclaim_supported=reclaim_supported
        )
        decision = decide(self.policy, self.state.view(self.key), obs, now, self.config)
        self.state.apply(decision)
        for action in decision.actions:
            self.execute(action, now)
        self.history.append(decision)
        return decision

    def execute(self, action: Action, now: float) -> None:
        # In mode "would" this plays dry-run's overlay too (``DryRunFiles``): the files read what was
        # written, as in enforcing, though nothing reached a kernel.
        result = self.mode
        if isinstance(action, SetMemoryHigh):
            self.kernel_high = action.value
        elif isinstance(action, RestoreMemoryHigh):
            result = "restored" if self.mode == "applied" else "would"
            owned = self.state.target(self.key).memory_high
            self.kernel_high = owned.before if owned is not None else None
        elif isinstance(action, SetSysctl):
            if action.name == "vfs_cache_pressure":
                self.node_vfs = action.value
        elif isinstance(action, RestoreSysctl):
            result = "restored" if self.mode == "applied" else "would"
            vfs = self.state.node.vfs_cache_pressure
            self.node_vfs = vfs.before if vfs is not None else self.node_vfs
        elif isinstance(action, (Reclaim, ReleaseOwnership)):
            pass
        note_outcome(self.state, action, result, now)

    def all_records(self) -> List[Record]:
        """Records in journal order: the decision's own, then each action's cause."""
        out: List[Record] = []
        for decision in self.history:
            out.extend(decision.records)
            out.extend(a.cause for a in decision.actions)
        return out


def without_dry_run_differences(record: Record) -> Tuple[RecordType, str, str, Optional[str], Optional[Knob]]:
    """What must be identical between dry-run and enforcing for one record."""
    return (record.type, record.message, record.policy, record.cgroup, record.action)
