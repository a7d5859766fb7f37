"""Micro-benchmark of the pure decision core: decisions per second with 1, 100 and 1000 cgroups.

One round is one decision per cgroup, against a state that already holds a
baseline for every cgroup (as the daemon's does after start-up): "calm" is the
idle re-check (nothing to do), "pressured" a confirmed trigger event that takes
the first rung. Every round stores its decisions in a fresh copy of the same baselined table
(copied outside the timing), as the daemon stores each decision in place.

Cheap by default (a few rounds: it runs in ``make test``, and asserts what the
decisions are, so it can fail); ``make bench-cost`` runs it with more rounds
(REMEDIATOR_BENCH_ROUNDS) and keeps pytest-benchmark's JSON. Timing is
reported, never asserted: speed belongs to the benchmark, not to a test.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Tuple

import pytest

from remediator.core.decide import decide
from remediator.core.state import CoreConfig, CoreState, Observation, TargetKey, initial_state
from remediator.knobs.reclaim import Reclaim
from remediator.policy.compiled import Policy
from remediator.records import RecordType
from tests.unit.test_core_builders import cgroup_snapshot, make_policy, node_snapshot, reclaim_rung

ROUNDS = int(os.environ.get("REMEDIATOR_BENCH_ROUNDS", "3"))
CONFIG = CoreConfig()
BASELINE_AT = 1000.0
DECIDE_AT = 1010.0
# 10 s after the baseline: 1 ms of stall is calm, 2 s of it is a confirmed event (threshold 150 ms).
CALM_STALL_US = 1_000
PRESSURED_STALL_US = 2_000_000

Round = Callable[[CoreState], List[Any]]


def _cgroups(n: int) -> List[str]:
    return [f"system.slice/app{i:04d}.service" for i in range(n)]


def _baselined(policy: Policy, cgroups: List[str]) -> CoreState:
    state = initial_state()
    for cgroup in cgroups:
        key = TargetKey(policy.name, cgroup)
        obs = Observation(key, cgroup_snapshot(0, cgroup=cgroup), None, fired=False)
        state.apply(decide(policy, state.view(key), obs, BASELINE_AT, CONFIG))
    return state


def _round(policy: Policy, cgroups: List[str], stall_us: int, fired: bool) -> Round:
    node = node_snapshot()
    observations = [
        Observation(TargetKey(policy.name, c), cgroup_snapshot(stall_us, cgroup=c), node, fired=fired)
        for c in cgroups
    ]

    def one_round(current: CoreState) -> List[Any]:
        decisions = []
        for obs in observations:
            decision = decide(policy, current.view(obs.key), obs, DECIDE_AT, CONFIG)
            current.apply(decision)
            decisions.append(decision)
        return decisions

    return one_round


def _run(benchmark: Any, state: CoreState, one_round: Round, n: int) -> List[Any]:
    def fresh() -> Tuple[Tuple[CoreState], Dict[str, Any]]:
        return (state.copy(),), {}

    decisions: List[Any] = benchmark.pedantic(
        one_round, setup=fresh, rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.mean > 0:
        benchmark.extra_info["decisions_per_sec"] = n / stats.stats.mean
        benchmark.extra_info["cgroups"] = n
    return decisions


def _setup(n: int) -> Tuple[Policy, CoreState, List[str]]:
    policy = make_policy(reclaim_rung(), verify_sec=30.0)
    cgroups = _cgroups(n)
    return policy, _baselined(policy, cgroups), cgroups


@pytest.mark.parametrize("n", [1, 100, 1000])
def test_bench_core_calm_rechecks_decide_nothing(benchmark: Any, n: int) -> None:
    policy, state, cgroups = _setup(n)

    decisions = _run(benchmark, state, _round(policy, cgroups, CALM_STALL_US, fired=False), n)

    assert len(decisions) == n
    assert all(not d.actions and not d.records and d.wakeup_at is None for d in decisions)


@pytest.mark.parametrize("n", [1, 100, 1000])
def test_bench_core_confirmed_events_each_take_the_first_rung(benchmark: Any, n: int) -> None:
    policy, state, cgroups = _setup(n)

    decisions = _run(benchmark, state, _round(policy, cgroups, PRESSURED_STALL_US, fired=True), n)

    assert len(decisions) == n
    for decision, cgroup in zip(decisions, cgroups):
        (action,) = decision.actions
        assert isinstance(action, Reclaim) and action.cgroup == cgroup
        assert [r.type for r in decision.records] == [RecordType.PRESSURE_CONFIRMED]
