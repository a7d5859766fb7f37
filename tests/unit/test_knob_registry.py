"""One module per knob, found through one registry (issue 11 item 1).

Every knob of the audit vocabulary and every rung kind a policy can name has exactly one plugin; the
ladder, the core's outcome bookkeeping and the executor find a knob only through the registry, so a
fifth knob registered here (without touching any other module) is planned, noted and executed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, cast, get_args

import pytest

from remediator.core.ladder import evaluate_rung
from remediator.core.outcomes import note_outcome
from remediator.core.state import NodeState, TargetState, initial_state
from remediator.daemon.confined_io import WRITABLE_CGROUP_FILES, WRITABLE_PROC_FILES
from remediator.daemon.state_schema import KIND_MEMORY_HIGH, KIND_SYSCTL, OWNABLE_SYSCTLS
from remediator.knobs import plugin_for, plugin_of, plugins, register, unregister
from remediator.knobs.base import (
    Action,
    Holding,
    KnobFile,
    KnobPlugin,
    KnobWriter,
    Look,
    OutcomeT_co,
    RungContext,
    RungOutcome,
    RungTake,
)
from remediator.policy.compiled import ActionSpec, RateLimit
from remediator.records import Knob, Record, RecordType
from tests.unit.test_core_builders import CGROUP, Driver, cgroup_snapshot, limits, make_policy, node_snapshot
from tests.unit.test_core_ladder import context
from tests.unit.test_executor import APP, make_rig

MEMORY_LOW = cast(Knob, "memory_low")


def test_every_knob_has_exactly_one_plugin() -> None:
    registered = [plugin.knob for plugin in plugins()]
    assert sorted(registered) == sorted(Knob)
    for knob in Knob:
        plugin = plugin_of(knob)
        assert plugin is not None
        assert plugin.knob is knob


def test_every_rung_kind_a_policy_can_name_has_a_plugin() -> None:
    kinds = [
        field.default
        for spec in get_args(ActionSpec)
        for field in dataclasses.fields(spec)
        if field.name == "kind"
    ]
    assert len(kinds) == len(get_args(ActionSpec)) == 4
    for kind in kinds:
        assert isinstance(kind, Knob)
        assert plugin_of(kind) is not None, kind


def test_an_owned_knob_is_one_the_state_file_can_record() -> None:
    owned = {plugin.knob: plugin.owned for plugin in plugins() if plugin.owned is not None}
    assert sorted(owned) == [Knob.MEMORY_HIGH, Knob.VFS_CACHE_PRESSURE]
    for knob, spec in owned.items():
        assert spec.knob is knob
        if spec.per_cgroup:
            assert spec.kind == KIND_MEMORY_HIGH
        else:
            assert spec.kind == KIND_SYSCTL
            assert knob.value in OWNABLE_SYSCTLS


def test_the_confined_writer_allows_exactly_the_files_the_knobs_write() -> None:
    cgroup_files = {name for plugin in plugins() for name in plugin.cgroup_writes}
    proc_files = {path for plugin in plugins() for path in plugin.node_writes}
    assert cgroup_files == WRITABLE_CGROUP_FILES
    assert proc_files == WRITABLE_PROC_FILES
    for plugin in plugins():
        assert plugin.cgroup_writes or plugin.node_writes, plugin.knob
        if plugin.owned is not None:
            target = plugin.owned.target(CGROUP)
            allowed = plugin.cgroup_writes if target.cgroup is not None else plugin.node_writes
            assert target.file in allowed


def test_a_knob_cannot_be_registered_twice() -> None:
    reclaim = plugin_of(Knob.RECLAIM)
    assert reclaim is not None
    with pytest.raises(ValueError, match="already registered"):
        register(reclaim)


# ---- a fifth knob, defined here and nowhere else --------------------------------------------


@dataclass(frozen=True)
class MemoryLowAction:
    """What a policy's rung would say (the policy model of the fifth knob)."""

    bytes: int
    limits: RateLimit = dataclasses.field(default_factory=limits)
    kind: Knob = dataclasses.field(default=MEMORY_LOW, init=False)


@dataclass(frozen=True)
class SetMemoryLow(Action):
    cgroup: str
    value: int
    cause: Record


class MemoryLow(KnobPlugin):
    knob = MEMORY_LOW

    def __init__(self) -> None:
        self.noted: List[Tuple[Action, str]] = []

    def handles(self, action: Action) -> bool:
        return isinstance(action, SetMemoryLow)

    def subject(self, action: Action) -> Optional[str]:
        return cast(SetMemoryLow, action).cgroup

    def plan(self, spec: object, index: int, ctx: RungContext) -> RungOutcome:
        low = cast(MemoryLowAction, spec)
        cause = ctx.record(
            RecordType.ACTION_APPLIED, f"protect {low.bytes} bytes of {ctx.where}", low.kind, index
        )
        return RungTake(SetMemoryLow(cgroup=ctx.key.cgroup or "", value=low.bytes, cause=cause))

    def note(self, target: TargetState, node: NodeState, action: Action, result: str, now: float) -> Holding:
        self.noted.append((action, result))
        return Holding(target, node)

    def execute(self, action: Action, writer: KnobWriter[OutcomeT_co]) -> OutcomeT_co:
        assert isinstance(action, SetMemoryLow)
        current = writer.read_uint(KnobFile(action.cgroup, "memory.current"))
        return writer.finish("applied", before=str(current), after=str(action.value))


@pytest.fixture
def memory_low() -> Iterator[MemoryLow]:
    plugin = MemoryLow()
    register(plugin)
    try:
        yield plugin
    finally:
        unregister(MEMORY_LOW)


def test_a_fifth_knob_is_planned_noted_and_executed_through_the_registry(
    memory_low: MemoryLow, tmp_path: Path
) -> None:
    ctx = context(cgroup_snapshot(), node_snapshot())
    outcome = evaluate_rung(cast(ActionSpec, MemoryLowAction(bytes=4096)), 2, ctx)
    assert isinstance(outcome, RungTake)
    action = outcome.action
    assert isinstance(action, SetMemoryLow)
    assert action.cgroup == CGROUP
    assert action.cause.action == MEMORY_LOW
    assert action.cause.message == f"protect 4096 bytes of {CGROUP}"
    assert plugin_for(action) is memory_low

    state = initial_state()
    before = repr(state)
    note_outcome(state, action, "applied", 1.0)
    assert repr(state) == before
    assert memory_low.noted == [(action, "applied")]

    rig = make_rig(tmp_path)
    done = rig.executor.execute(SetMemoryLow(cgroup=APP, value=4096, cause=action.cause))
    assert done.result == "applied"
    (record,) = done.records
    assert record.action == MEMORY_LOW
    assert record.cgroup == APP
    assert record.after == "4096"
    assert record.before == rig.kernel.read_file(APP, "memory.current").strip()
    assert rig.io.writes == []


def test_a_fifth_knob_climbs_a_policy_ladder_in_the_decision_core(memory_low: MemoryLow) -> None:
    driver = Driver(make_policy(cast(ActionSpec, MemoryLowAction(bytes=4096))))
    driver.observe(0.0)
    decision = driver.observe(1.0, share=0.5, fired=True)
    (action,) = decision.actions
    assert isinstance(action, SetMemoryLow)
    assert action.cause.type is RecordType.ACTION_APPLIED
    assert action.cause.extra["RUNG"] == "0"
    assert memory_low.noted == [(action, "applied")]


@dataclass(frozen=True)
class RestoreMemoryLow(Action):
    cgroup: str
    cause: Record


class OwningMemoryLow(MemoryLow):
    """The fifth knob as one whose value is ours until calm gives it back (kept here, not in the
    core's state: a knob that owns a value also adds its field to ``core/state.py``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ours = False
        self.guards: List[str] = []

    def handles(self, action: Action) -> bool:
        return isinstance(action, (SetMemoryLow, RestoreMemoryLow))

    def note(self, target: TargetState, node: NodeState, action: Action, result: str, now: float) -> Holding:
        self.ours = isinstance(action, SetMemoryLow) and result == "applied"
        return Holding(target, node)

    def holds(self, look: Look, target: TargetState, node: NodeState) -> bool:
        return self.ours

    def release_if_changed(self, look: Look, target: TargetState, node: NodeState) -> Holding:
        self.guards.append(f"release {look.now:g}")
        return Holding(target, node)

    def back_off(self, look: Look, target: TargetState, node: NodeState) -> Holding:
        self.guards.append(f"back_off {look.now:g}")
        return Holding(target, node)

    def calm_restore(self, look: Look, target: TargetState, node: NodeState, calm: str) -> Holding:
        if not self.ours:
            return Holding(target, node)
        cause = look.record(RecordType.ROLLED_BACK, f"restore memory.low of {look.where}: {calm}", MEMORY_LOW)
        return Holding(target, node, (RestoreMemoryLow(cgroup=look.key.cgroup or "", cause=cause),))


def test_the_core_turn_asks_a_fifth_knob_to_guard_and_restore_what_it_owns() -> None:
    plugin = OwningMemoryLow()
    register(plugin)
    try:
        driver = Driver(make_policy(cast(ActionSpec, MemoryLowAction(bytes=4096)), calm_sec=120.0))
        driver.observe(0.0)
        (taken,) = driver.observe(1.0, share=0.5, fired=True).actions
        assert isinstance(taken, SetMemoryLow)
        assert plugin.ours
        assert driver.observe(2.0).wakeup_at == 31.0  # the rung's verify time
        verified = driver.observe(31.0)
        assert verified.actions == ()
        assert verified.wakeup_at == 122.0  # calm_since + calm_sec: the target holds a value of ours
        (restore,) = driver.observe(122.0).actions
    finally:
        unregister(MEMORY_LOW)
    assert isinstance(restore, RestoreMemoryLow)
    assert restore.cause.message == (
        f"restore memory.low of {CGROUP}: pressure stayed below the threshold for 120 s"
    )
    assert restore.cause.action == MEMORY_LOW
    assert not plugin.ours
    assert plugin.guards == [
        f"{guard} {now:g}" for now in (1, 2, 31, 122) for guard in ("release", "back_off")
    ]


def test_a_removed_knob_is_no_longer_found(tmp_path: Path) -> None:
    plugin = MemoryLow()
    register(plugin)
    unregister(MEMORY_LOW)
    assert plugin_of(MEMORY_LOW) is None
    ctx = context(cgroup_snapshot(), node_snapshot())
    with pytest.raises(ValueError, match="no knob module for rung kind memory_low"):
        evaluate_rung(cast(ActionSpec, MemoryLowAction(bytes=4096)), 0, ctx)
    cause = Record(RecordType.ACTION_APPLIED, "protect", policy="p", cgroup=APP)
    assert plugin_for(SetMemoryLow(cgroup=APP, value=1, cause=cause)) is None
    done = make_rig(tmp_path).executor.execute(SetMemoryLow(cgroup=APP, value=1, cause=cause))
    assert done.result == "failed"
    assert "unknown action SetMemoryLow" in done.records[0].message
