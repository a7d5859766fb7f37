"""A decision costs the same with 10 targets as with 2000: it never touches the other targets.

The caller's ``CoreState`` holds every target; a decision sees one target's state and the
node's (``CoreState.view``), and the caller stores what it returns in place
(``CoreState.apply``, ``note_outcome``). Before, each decision copied the whole targets
mapping (an immutable value) and counted the policy's clamped cgroups over every target.
Pinned without timing: the keys hashed and compared, the reads of other targets' states,
and the memory allocated while one target is decided, stored and its outcome noted are the
same at N = 10 and N = 2000.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Tuple

import pytest

from remediator.core.decide import decide
from remediator.core.outcomes import note_outcome
from remediator.core.state import ChangedValue, CoreConfig, CoreState, Observation, TargetKey, TargetState
from tests.unit.test_core_builders import cgroup_snapshot, make_policy, memory_high_rung, node_snapshot

POLICY = make_policy(memory_high_rung(max_clamped_cgroups=100_000))
CGROUP = "system.slice/decided.service"
# Bytes a decision may allocate more at N = 2000 than at N = 10 (allocator noise); a copy of the
# targets mapping alone is tens of KiB.
ALLOCATION_SLACK = 2048


@dataclass(frozen=True)
class _CountingKey(TargetKey):
    hashes: ClassVar[int] = 0
    compares: ClassVar[int] = 0

    def __hash__(self) -> int:
        _CountingKey.hashes += 1
        return hash((self.policy, self.cgroup))

    def __eq__(self, other: object) -> bool:
        _CountingKey.compares += 1
        return isinstance(other, TargetKey) and (self.policy, self.cgroup) == (other.policy, other.cgroup)


@dataclass(frozen=True)
class _OtherState(TargetState):
    """Another target's state: counts every read of its fields."""

    reads: ClassVar[int] = 0

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("__"):
            _OtherState.reads += 1
        return super().__getattribute__(name)


def _table(n: int) -> Tuple[CoreState, TargetKey]:
    """``n`` baselined targets of the policy, one in ten holding a memory.high of ours, plus the
    target to decide about (baselined at 0 s)."""
    state = CoreState()
    held = ChangedValue(
        ours=3 << 30,
        before=None,
        written_at=0.0,
        stall_rate_at_write=0.5,
        events_high_at_write=0,
    )
    for i in range(n):
        other = _OtherState(last_total_us=0, last_at=0.0, memory_high=held if i % 10 == 0 else None)
        state.put(_CountingKey(POLICY.name, f"system.slice/app{i:04d}.service"), other)
    key = _CountingKey(POLICY.name, CGROUP)
    baseline = Observation(key, cgroup_snapshot(0, cgroup=CGROUP), node_snapshot(), fired=False)
    state.apply(decide(POLICY, state.view(key), baseline, 0.0, CoreConfig()))
    return state, key


def _one_look(state: CoreState, key: TargetKey) -> None:
    """A confirmed trigger event that takes the memory.high rung, stored, its write noted applied."""
    obs = Observation(key, cgroup_snapshot(5_000_000, cgroup=CGROUP), node_snapshot(), fired=True)
    decision = decide(POLICY, state.view(key), obs, 10.0, CoreConfig())
    state.apply(decision)
    for action in decision.actions:
        note_outcome(state, action, "applied", 10.0)


def _cost(n: int) -> Tuple[int, int, int, int]:
    """(key hashes, key compares, reads of other targets' states, bytes allocated at peak)."""
    state, key = _table(n)
    _CountingKey.hashes = _CountingKey.compares = _OtherState.reads = 0
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        _one_look(state, key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The look did its work: the rung was taken and the write is ours.
    assert state.target(key).memory_high is not None
    assert state.clamped(POLICY.name) == (n + 9) // 10 + 1
    return _CountingKey.hashes, _CountingKey.compares, _OtherState.reads, peak - before


def test_a_decision_touches_no_other_target() -> None:
    _cost(10)  # warm-up: first-use caches are not the decision's cost
    small, large = _cost(10), _cost(2000)

    assert small[:3] == large[:3]
    assert small[2] == 0
    assert large[3] <= small[3] + ALLOCATION_SLACK, (small, large)


def test_the_decided_target_is_a_new_value_and_the_table_read_only() -> None:
    state, key = _table(3)
    before = state.target(key)
    before_repr = repr(before)

    _one_look(state, key)

    assert state.target(key) is not before
    assert repr(before) == before_repr
    assert isinstance(state.target(key).memory_high, ChangedValue)
    with pytest.raises(TypeError):
        state.targets[key] = TargetState()  # type: ignore[index]


def test_the_clamped_count_follows_every_store_and_drop() -> None:
    state, key = _table(0)
    assert state.clamped(POLICY.name) == 0
    _one_look(state, key)
    assert state.clamped(POLICY.name) == 1
    other = TargetKey(POLICY.name, "system.slice/other.service")
    assert state.view(key).clamped_elsewhere == 0
    assert state.view(other).clamped_elsewhere == 1
    held = state.target(key).memory_high
    state.put(key, replace(state.target(key), memory_high=None))
    assert state.clamped(POLICY.name) == 0
    state.put(key, replace(state.target(key), memory_high=held))
    state.put(key, replace(state.target(key), last_at=11.0))
    assert state.clamped(POLICY.name) == 1
    state.drop(key)
    state.drop(key)
    assert state.clamped(POLICY.name) == 0 and key not in state.targets
