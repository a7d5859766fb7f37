"""Rung preconditions and amounts: what reclaim may count, where memory.high may go."""

from __future__ import annotations

from typing import Dict, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.core.decide import decide
from remediator.core.ladder import evaluate_rung
from remediator.core.state import CoreConfig, Observation, TargetKey, initial_state
from remediator.diagnosis.composition import PAGE_SIZE, compose, memory_high_floor
from remediator.knobs.base import RungContext, RungDecline, RungTake
from remediator.knobs.memory_high import SetMemoryHigh
from remediator.knobs.reclaim import Reclaim, reclaim_amount
from remediator.policy.compiled import MemoryHighAction, ReclaimAction
from remediator.readings import CgroupSnapshot, NodeSnapshot
from tests.unit.test_core_builders import (
    CGROUP,
    GiB,
    MiB,
    cgroup_snapshot,
    make_policy,
    memory_high_rung,
    node_snapshot,
    reclaim_rung,
)


def context(
    snapshot: CgroupSnapshot, node: Optional[NodeSnapshot] = None, *, barred: bool = False
) -> RungContext:
    policy = make_policy(reclaim_rung())
    return RungContext(
        policy=policy,
        key=TargetKey(policy.name, snapshot.cgroup),
        snapshot=snapshot,
        node=node,
        composition=compose(snapshot, node),
        reclaim_supported=True,
        evidence={},
        stall_text="full stall 50.0 %",
        owned_memory_high=None,
        memory_high_barred=barred,
        owned_vfs=None,
        vfs_owned_elsewhere=None,
    )


def test_reclaim_never_counts_shmem_as_reclaimable() -> None:
    # "file" includes tmpfs; shmem sits on the anon LRU, so only the file LRUs are cache.
    stat = {"anon": 256 * MiB, "file": 3 * GiB, "shmem": 3 * GiB - 32 * MiB, "active_file": 32 * MiB}
    outcome = evaluate_rung(reclaim_rung(min_bytes=64 * MiB), 0, context(cgroup_snapshot(stat=stat)))
    assert isinstance(outcome, RungDecline)
    assert outcome.message.startswith("only 32.0 MiB of clean page cache")
    assert "shmem/tmpfs 3.0 GiB" in outcome.message


def test_reclaim_never_counts_dirty_or_writeback_pages() -> None:
    stat = {
        "anon": 256 * MiB,
        "file": 2 * GiB,
        "active_file": 1 * GiB,
        "inactive_file": 1 * GiB,
        "file_dirty": 1 * GiB,
        "file_writeback": 512 * MiB,
    }
    outcome = evaluate_rung(reclaim_rung(fraction=1.0), 0, context(cgroup_snapshot(stat=stat)))
    assert isinstance(outcome, RungTake)
    assert isinstance(outcome.action, Reclaim)
    assert outcome.action.bytes == 512 * MiB


def test_reclaim_without_the_lru_split_falls_back_to_file_minus_shmem() -> None:
    stat = {"anon": 1 * GiB, "file": 2 * GiB, "shmem": 1 * GiB}
    outcome = evaluate_rung(reclaim_rung(fraction=0.5), 0, context(cgroup_snapshot(stat=stat)))
    assert isinstance(outcome, RungTake) and isinstance(outcome.action, Reclaim)
    assert outcome.action.bytes == 512 * MiB


def test_reclaim_is_capped_by_max_bytes_and_says_so() -> None:
    outcome = evaluate_rung(
        reclaim_rung(fraction=1.0, max_bytes=100 * MiB + 5), 0, context(cgroup_snapshot())
    )
    assert isinstance(outcome, RungTake) and isinstance(outcome.action, Reclaim)
    assert outcome.action.bytes == 100 * MiB
    assert "capped by max_bytes" in outcome.action.cause.message
    assert outcome.action.cause.message.startswith(f"reclaim 100.0 MiB of clean page cache from {CGROUP}")


def test_memory_high_relative_to_max_is_declined_when_memory_max_is_unset() -> None:
    outcome = evaluate_rung(memory_high_rung(), 1, context(cgroup_snapshot(max_bytes=None)))
    assert isinstance(outcome, RungDecline)
    assert "memory.max" in outcome.message and "not set" in outcome.message


def test_memory_high_relative_to_current_stays_below_current_usage() -> None:
    snapshot = cgroup_snapshot(max_bytes=None, current=3 * GiB)
    outcome = evaluate_rung(memory_high_rung(fraction=0.9, relative_to="current"), 1, context(snapshot))
    assert isinstance(outcome, RungTake) and isinstance(outcome.action, SetMemoryHigh)
    value = outcome.action.value
    assert value is not None and value < 3 * GiB


def test_memory_high_counts_anon_as_reclaimable_when_swap_is_usable() -> None:
    # 3.98 GiB of anon + the 64 MiB margin leaves no room under 4 GiB, unless anon can be swapped.
    stat = {"anon": 3 * GiB + 1000 * MiB, "file": 16 * MiB, "active_file": 16 * MiB}
    snapshot = cgroup_snapshot(stat=stat, current=4 * GiB - 8 * MiB)
    without_swap = evaluate_rung(memory_high_rung(), 1, context(snapshot, node_snapshot(swap_total=0)))
    assert isinstance(without_swap, RungDecline)
    assert without_swap.message.startswith("unreclaimable memory (anon without swap 4.0 GiB")
    with_swap = evaluate_rung(memory_high_rung(), 1, context(snapshot, node_snapshot(swap_total=8 * GiB)))
    assert isinstance(with_swap, RungTake)


def test_barred_memory_high_is_declined() -> None:
    outcome = evaluate_rung(memory_high_rung(), 1, context(cgroup_snapshot(), barred=True))
    assert isinstance(outcome, RungDecline) and outcome.reason == "backed_off"


# ------------------------------------------------------------------ invariants

sizes = st.integers(min_value=0, max_value=8 * GiB)


@st.composite
def snapshots(draw: st.DrawFn) -> CgroupSnapshot:
    stat: Dict[str, int] = {
        "anon": draw(sizes),
        "shmem": draw(sizes),
        "active_file": draw(sizes),
        "inactive_file": draw(sizes),
        "file_dirty": draw(sizes),
        "file_writeback": draw(st.integers(min_value=0, max_value=GiB)),
        "kernel": draw(st.integers(min_value=0, max_value=GiB)),
        "slab_reclaimable": draw(st.integers(min_value=0, max_value=256 * MiB)),
        "sock": draw(st.integers(min_value=0, max_value=64 * MiB)),
    }
    stat["file"] = stat["active_file"] + stat["inactive_file"] + stat["shmem"]
    current = draw(st.integers(min_value=PAGE_SIZE, max_value=32 * GiB))
    max_bytes = draw(st.one_of(st.none(), st.integers(min_value=PAGE_SIZE, max_value=32 * GiB)))
    swap_max = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=4 * GiB)))
    return cgroup_snapshot(stat=stat, current=current, max_bytes=max_bytes, swap_max=swap_max)


fractions = st.floats(min_value=0.01, max_value=1.0, allow_nan=False)


@st.composite
def memory_high_specs(draw: st.DrawFn) -> MemoryHighAction:
    return memory_high_rung(
        fraction=draw(fractions),
        relative_to=draw(st.sampled_from(["max", "current"])),
        floor_margin_bytes=draw(st.integers(min_value=0, max_value=512 * MiB)),
        min_bytes=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=8 * GiB))),
    )


@st.composite
def reclaim_specs(draw: st.DrawFn) -> ReclaimAction:
    return reclaim_rung(
        fraction=draw(fractions),
        min_bytes=draw(st.integers(min_value=0, max_value=GiB)),
        max_bytes=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=4 * GiB))),
    )


@given(snapshots(), memory_high_specs(), st.integers(min_value=0, max_value=8 * GiB))
def test_memory_high_is_never_below_the_floor_nor_at_or_above_memory_max(
    snapshot: CgroupSnapshot, spec: MemoryHighAction, swap_total: int
) -> None:
    node = node_snapshot(swap_total=swap_total)
    outcome = evaluate_rung(spec, 1, context(snapshot, node))
    if isinstance(outcome, RungDecline):
        return
    action = outcome.action
    assert isinstance(action, SetMemoryHigh)
    assert action.value is not None
    floor = memory_high_floor(compose(snapshot, node), spec.floor_margin_bytes, spec.min_bytes)
    assert action.value >= floor
    if snapshot.max_bytes is not None:
        assert action.value < snapshot.max_bytes
    if spec.relative_to == "current":
        assert action.value < snapshot.current_bytes
    assert action.value % PAGE_SIZE == 0


@given(snapshots(), reclaim_specs())
def test_reclaim_never_asks_for_more_than_the_reclaimable_estimate(
    snapshot: CgroupSnapshot, spec: ReclaimAction
) -> None:
    comp = compose(snapshot)
    outcome = evaluate_rung(spec, 0, context(snapshot))
    stat = snapshot.stat
    if "active_file" in stat or "inactive_file" in stat:
        lru_file = stat.get("active_file") + stat.get("inactive_file")
    else:
        # Without the LRU split (old kernels, copied trees) the estimate is file minus shmem.
        lru_file = stat.get("file") - stat.get("shmem")
    clean_file_lru = lru_file - stat.get("file_dirty") - stat.get("file_writeback")
    assert reclaim_amount(comp, spec) <= max(0, clean_file_lru)
    if isinstance(outcome, RungDecline):
        return
    action = outcome.action
    assert isinstance(action, Reclaim)
    assert PAGE_SIZE <= action.bytes <= comp.reclaimable_cache_bytes
    assert action.bytes % PAGE_SIZE == 0
    if spec.max_bytes is not None:
        assert action.bytes <= spec.max_bytes


@settings(max_examples=50)
@given(snapshots(), memory_high_specs(), reclaim_specs())
def test_decide_keeps_the_invariants_through_a_whole_ladder(
    snapshot: CgroupSnapshot, high_spec: MemoryHighAction, reclaim_spec: ReclaimAction
) -> None:
    policy = make_policy(reclaim_spec, high_spec, verify_sec=10.0)
    key = TargetKey(policy.name, snapshot.cgroup)
    node = node_snapshot()
    floor = memory_high_floor(compose(snapshot, node), high_spec.floor_margin_bytes, high_spec.min_bytes)
    state = initial_state()
    total = 0
    for step, now in enumerate((0.0, 5.0, 15.0, 25.0)):
        total += 0 if step == 0 else 5_000_000
        observed = cgroup_snapshot(
            total, stat=snapshot.stat.values, current=snapshot.current_bytes, max_bytes=snapshot.max_bytes
        )
        decision = decide(
            policy, state.view(key), Observation(key, observed, node, fired=step > 0), now, CoreConfig()
        )
        state.apply(decision)
        for action in decision.actions:
            if isinstance(action, SetMemoryHigh):
                assert action.value is not None and action.value >= floor
                assert snapshot.max_bytes is None or action.value < snapshot.max_bytes
            if isinstance(action, Reclaim):
                assert action.bytes <= compose(snapshot).reclaimable_cache_bytes
