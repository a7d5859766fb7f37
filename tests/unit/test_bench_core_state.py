"""The core's state copy per decision stays cheap with many targets.

``CoreState.with_target`` copies the targets mapping (the state is an
immutable value) once per decision. Copying a read-only view through
``dict(view)`` re-hashed every key, which made each decision cost ~1 ms at
2000 targets and start-up quadratic (bench/cost); the copy now reuses the
stored hashes. Pinned by counting hash calls, not by timing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from remediator.core.state import CoreState, TargetKey, TargetState, initial_state


@dataclass(frozen=True)
class _CountingKey(TargetKey):
    hashes: ClassVar[int] = 0

    def __hash__(self) -> int:
        _CountingKey.hashes += 1
        return hash((self.policy, self.cgroup))


def _state_with(n: int) -> CoreState:
    state = initial_state()
    for i in range(n):
        state = state.with_target(_CountingKey("p", f"cg{i}"), TargetState())
    return state


def test_adding_a_target_does_not_rehash_the_targets_already_there() -> None:
    state = _state_with(200)
    _CountingKey.hashes = 0

    state.with_target(_CountingKey("p", "new"), TargetState())

    assert _CountingKey.hashes <= 2


def test_with_target_leaves_the_previous_state_unchanged_and_read_only() -> None:
    before = _state_with(3)
    key = _CountingKey("p", "cg1")

    after = before.with_target(key, TargetState(last_total_us=42))

    assert before.target(key).last_total_us is None
    assert after.target(key).last_total_us == 42
    assert len(after.targets) == len(before.targets) == 3
    try:
        after.targets[key] = TargetState()  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("the targets mapping must be read-only")
