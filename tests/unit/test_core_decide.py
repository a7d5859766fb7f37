"""The decision core's behaviour over scripted observations at explicit times."""

from __future__ import annotations

from dataclasses import replace
from typing import List

import pytest

from remediator.core.decide import Decision, decide
from remediator.core.outcomes import forget, on_exit
from remediator.core.state import CoreConfig, Observation, TargetKey, initial_state
from remediator.diagnosis.composition import page_align_down
from remediator.knobs.base import ReleaseOwnership
from remediator.knobs.memory_high import RestoreMemoryHigh, SetMemoryHigh
from remediator.knobs.reclaim import Reclaim
from remediator.knobs.sysctl import RestoreSysctl, SetSysctl
from remediator.policy.compiled import ActionSpec, Conditions, ReclaimFollowUp
from remediator.readings import CgroupSnapshot, MemoryEvents, MemoryStat, Pressure, PressureLine
from remediator.records import RecordType
from tests.fakefs import SEED_EVENTS, SEED_PRESSURE, SEED_STAT
from tests.unit.test_core_builders import (
    CACHE_HEAVY_STAT,
    CGROUP,
    Driver,
    GiB,
    MiB,
    cgroup_snapshot,
    drop_caches_rung,
    make_policy,
    memory_high_rung,
    node_snapshot,
    reclaim_rung,
    types_of,
    vfs_cache_pressure_rung,
    without_dry_run_differences,
)

TMPFS_HEAVY_STAT = {
    "anon": 960 * MiB,
    "file": 3 * GiB + 32 * MiB,
    "shmem": 3 * GiB,
    "active_file": 16 * MiB,
    "inactive_file": 16 * MiB,
    "kernel": 32 * MiB,
    "slab_reclaimable": 0,
}

# Unreclaimable 3 GiB + 48 MiB: with a 64 MiB margin the floor is 3 GiB + 112 MiB, under the 4 GiB limit.
ANON_HEAVY_STAT = {
    "anon": 2 * GiB,
    "file": 1 * GiB + 512 * MiB,
    "shmem": 1 * GiB,
    "active_file": 256 * MiB,
    "inactive_file": 256 * MiB,
    "kernel": 64 * MiB,
    "slab_reclaimable": 16 * MiB,
}


def memory_high_writes(driver: Driver) -> List[SetMemoryHigh]:
    return [a for d in driver.history for a in d.actions if isinstance(a, SetMemoryHigh)]


# ------------------------------------------------------------------ measuring


def test_first_observation_only_sets_the_baseline_even_when_fired() -> None:
    driver = Driver(make_policy(reclaim_rung()))
    driver.total_us = 900_000_000  # a large cumulative stall from before we watched
    decision = driver.observe(0.0, fired=True)
    assert decision.actions == ()
    assert decision.records == ()
    assert decision.wakeup_at is None
    assert driver.state.target(driver.key).last_total_us == 900_000_000


def test_spurious_trigger_event_right_after_arming_is_ignored() -> None:
    driver = Driver(make_policy(reclaim_rung()))
    driver.observe(0.0)
    # 50 ms of stall in the 0.1 s since arming: less than the 150 ms the trigger asks for.
    decision = driver.observe(0.1, share=0.5, fired=True)
    assert decision.actions == ()
    assert decision.records == ()
    assert driver.state.target(driver.key).pressured_since is None


def test_trigger_event_whose_window_began_before_a_recent_look_is_confirmed() -> None:
    # The kernel's count for an event at 10.4 reaches back to 8.4 (its 1 s window plus a share of the
    # previous one), before the look at 10.0: 120 ms since that look, but 170 ms since the look at 0.0
    # that precedes it (the cost benchmark's late reactions: an event right after a rollback's look
    # was rejected and the daemon acted a window late).
    driver = Driver(make_policy(reclaim_rung()))
    driver.observe(0.0)
    driver.observe(9.5, share=0.0)
    driver.observe(10.0, share=0.1)  # 50 ms in 0.5 s: calm
    decision = driver.observe(10.4, share=0.3, fired=True)  # 120 ms since the last look
    assert [type(a) for a in decision.actions] == [Reclaim]
    assert driver.state.target(driver.key).pressured_since == 10.4
    # The record states the figure the event was confirmed by (170 ms counted from the look at 0.0,
    # the newest before the kernel's reach), in the trigger's terms: never the 120 ms since the last
    # look, a figure under the 150 ms threshold it claims was met.
    [confirmed] = [r for r in decision.records if r.type is RecordType.PRESSURE_CONFIRMED]
    assert "full stall 170 ms within the last 10400 ms (trigger: 150 ms within 1000 ms)" in confirmed.message


def test_trigger_event_is_unconfirmed_when_even_its_whole_window_holds_too_little_stall() -> None:
    driver = Driver(make_policy(reclaim_rung()))
    driver.observe(0.0)
    driver.observe(3.0, share=0.0)
    driver.observe(5.0, share=0.0)
    # The kernel's count reaches back to 4.5: at most the 75 ms since the look at 3.0, under 150 ms.
    decision = driver.observe(6.5, share=0.05, fired=True)
    assert decision.actions == () and decision.records == ()
    assert driver.state.target(driver.key).pressured_since is None


def test_unconfirmed_trigger_event_is_looked_at_again_a_quarter_window_later() -> None:
    # After an idle spell the kernel counts stall from its stale window start (an old episode's
    # tail): little new stall yet, so unconfirmed; the new stall is starting and the kernel's next
    # event would come a whole window later.
    driver = Driver(make_policy(reclaim_rung()))
    driver.observe(0.0)
    driver.observe(5.0)
    decision = driver.observe(8.0, share=0.01, fired=True)  # 30 ms since the look before 6.0
    assert decision.actions == () and decision.records == ()
    assert decision.wakeup_at == 8.25  # window 1 s
    assert [type(a) for a in driver.observe(8.25, share=0.9).actions] == [Reclaim]


def test_look_history_keeps_only_what_the_trigger_window_can_use() -> None:
    driver = Driver(make_policy(reclaim_rung()))
    for tick in range(100):
        driver.observe(tick * 0.25)
    looks = driver.state.target(driver.key).recent_looks
    # The kernel's count for an event at 24.75 reaches back two 1 s windows, to 22.75: that look on.
    assert [at for at, _ in looks] == [22.75 + 0.25 * i for i in range(9)]


def test_missing_full_line_counts_as_no_stall() -> None:
    driver = Driver(make_policy(reclaim_rung(), kind="full"))
    driver.snapshot_overrides = {"with_full": False}
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.9)
    assert decision.actions == ()
    assert driver.state.target(driver.key).pressured_since is None


def test_timed_observation_is_pressured_by_stall_rate_over_the_interval() -> None:
    driver = Driver(make_policy(reclaim_rung()))
    driver.observe(0.0)
    below = driver.observe(10.0, share=0.14)
    assert below.actions == ()
    above = driver.observe(20.0, share=0.16)
    assert [type(a) for a in above.actions] == [Reclaim]


def test_seed_snapshot_leads_to_reclaim_of_half_the_page_cache_first() -> None:
    def seed(full_total: int, some_total: int) -> CgroupSnapshot:
        return CgroupSnapshot(
            cgroup="system.slice/seed.service",
            current_bytes=4294836224,
            max_bytes=4294967296,
            high_bytes=None,
            min_bytes=0,
            low_bytes=0,
            swap_max_bytes=None,
            stat=MemoryStat(dict(SEED_STAT)),
            events=MemoryEvents(
                low=SEED_EVENTS["low"],
                high=SEED_EVENTS["high"],
                max=SEED_EVENTS["max"],
                oom=SEED_EVENTS["oom"],
                oom_kill=SEED_EVENTS["oom_kill"],
            ),
            pressure=Pressure(
                some=PressureLine(78.20, 41.11, 12.02, some_total),
                full=PressureLine(23.90, 11.03, 3.01, full_total),
            ),
        )

    assert "total=45112887" in SEED_PRESSURE and "total=183742991" in SEED_PRESSURE
    policy = make_policy(reclaim_rung(fraction=0.5), memory_high_rung(), name="seed")
    key = TargetKey("seed", "system.slice/seed.service")
    node = node_snapshot()
    config = CoreConfig()
    state = initial_state()
    state.apply(
        decide(policy, state.view(key), Observation(key, seed(45112887, 183742991), node, True), 0.0, config)
    )
    second = decide(
        policy, state.view(key), Observation(key, seed(45612887, 184742991), node, True), 1.0, config
    )
    assert len(second.actions) == 1
    action = second.actions[0]
    assert isinstance(action, Reclaim)
    assert action.bytes == page_align_down(int(0.5 * 2387432448))
    assert action.cause.type is RecordType.ACTION_APPLIED
    assert types_of(second.records) == [RecordType.PRESSURE_CONFIRMED]


# ------------------------------------------------------------------ sustained


def test_pressure_must_be_sustained_before_acting() -> None:
    driver = Driver(make_policy(reclaim_rung(), sustained_sec=30.0))
    driver.observe(0.0)
    early = driver.observe(1.0, share=0.5, fired=True)
    assert early.actions == ()
    assert early.records == ()
    assert early.wakeup_at == 31.0
    still_early = driver.observe(20.0, share=0.5, fired=True)
    assert still_early.actions == ()
    assert still_early.wakeup_at == 31.0
    sustained = driver.observe(31.0, share=0.5)
    assert types_of(sustained.records) == [RecordType.PRESSURE_CONFIRMED]
    assert [type(a) for a in sustained.actions] == [Reclaim]


def test_calm_observation_before_sustained_closes_the_episode() -> None:
    driver = Driver(make_policy(reclaim_rung(), sustained_sec=30.0))
    driver.observe(0.0)
    driver.observe(1.0, share=0.5, fired=True)
    calm = driver.observe(31.0, share=0.01)
    assert calm.actions == ()
    assert calm.records == ()
    assert driver.state.target(driver.key).pressured_since is None
    again = driver.observe(32.0, share=0.5, fired=True)
    assert again.actions == ()
    assert again.wakeup_at == 62.0


def test_pressure_confirmed_once_per_episode_with_stall_and_threshold() -> None:
    driver = Driver(make_policy(reclaim_rung(), memory_high_rung()))
    driver.observe(0.0)
    first = driver.observe(10.0, share=0.5, fired=True)
    confirmed = [r for r in first.records if r.type is RecordType.PRESSURE_CONFIRMED]
    assert len(confirmed) == 1
    # A fired event is judged by the stall the kernel can have counted for it, not by an average.
    assert "PSI trigger fired: full stall 5000 ms within the last 10000 ms" in confirmed[0].message
    assert "(trigger: 150 ms within 1000 ms)" in confirmed[0].message
    assert confirmed[0].evidence["STALL_DELTA_US"] == "5000000"
    assert confirmed[0].policy == "cache-hog" and confirmed[0].cgroup == CGROUP
    later = driver.observe(40.0, share=0.5)
    assert RecordType.PRESSURE_CONFIRMED not in types_of(later.records)


# ------------------------------------------------------------------ conditions


def test_failing_condition_declines_with_its_values() -> None:
    policy = make_policy(reclaim_rung(), conditions=Conditions(min_usage_fraction_of_max=0.9))
    driver = Driver(policy)
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.5, fired=True)
    assert decision.actions == ()
    declined = [r for r in decision.records if r.type is RecordType.ACTION_DECLINED]
    assert len(declined) == 1
    assert "min_usage_fraction_of_max" in declined[0].message
    assert "76.6 %" in declined[0].message and "90.0 %" in declined[0].message


def test_usage_condition_fails_when_memory_max_is_unset() -> None:
    policy = make_policy(reclaim_rung(), conditions=Conditions(min_usage_fraction_of_max=0.5))
    driver = Driver(policy, snapshot_overrides={"max_bytes": None})
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.5, fired=True)
    assert decision.actions == ()
    assert "memory.max is not set" in decision.records[-1].message


def test_declined_records_are_limited_to_one_per_reason_per_minute() -> None:
    driver = Driver(make_policy(reclaim_rung()), snapshot_overrides={"stat": TMPFS_HEAVY_STAT})
    driver.observe(0.0)
    first = driver.observe(10.0, share=0.5, fired=True)
    assert types_of(first.records) == [RecordType.PRESSURE_CONFIRMED, RecordType.ACTION_DECLINED]
    assert driver.observe(11.0, share=0.5, fired=True).records == ()
    assert driver.observe(69.0, share=0.5, fired=True).records == ()
    assert types_of(driver.observe(70.0, share=0.5, fired=True).records) == [RecordType.ACTION_DECLINED]


# ------------------------------------------------------------------ ladder, limits


def test_reclaim_declined_when_kernel_has_no_memory_reclaim() -> None:
    driver = Driver(make_policy(reclaim_rung(), memory_high_rung()))
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.5, fired=True, reclaim_supported=False)
    declined = [r for r in decision.records if r.type is RecordType.ACTION_DECLINED]
    assert [r.message for r in declined] == ["kernel has no memory.reclaim (needs 5.19 or later)"]
    assert declined[0].action == "reclaim"
    assert [type(a) for a in decision.actions] == [SetMemoryHigh]


def test_no_escalation_before_verify_sec() -> None:
    driver = Driver(make_policy(reclaim_rung(), memory_high_rung(), verify_sec=30.0))
    driver.observe(0.0)
    taken = driver.observe(10.0, share=0.5, fired=True)
    assert [type(a) for a in taken.actions] == [Reclaim]
    assert taken.wakeup_at == 40.0
    for now in (11.0, 20.0, 39.9):
        early = driver.observe(now, share=0.9, fired=True)
        assert early.actions == ()
        assert RecordType.ESCALATED not in types_of(early.records)
        assert early.wakeup_at == 40.0


def test_escalates_to_the_next_rung_when_pressure_did_not_fall() -> None:
    driver = Driver(make_policy(reclaim_rung(), memory_high_rung(fraction=0.8), verify_sec=30.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    decision = driver.observe(40.0, share=0.5)
    assert types_of(decision.records) == [RecordType.ESCALATED]
    assert "pressure did not fall within verify_sec (30 s) after reclaim" in decision.records[0].message
    assert len(decision.actions) == 1
    action = decision.actions[0]
    assert isinstance(action, SetMemoryHigh)
    assert action.value == page_align_down(int(4 * GiB * 0.8))
    assert action.expected is None
    assert action.cause.action == "memory_high"
    assert decision.wakeup_at == 70.0


def repeat_driver(reclaim_cooldown_sec: float = 2.0) -> Driver:
    # A reclaim for a pressure whose stall rate was 50 % (taken at 10, judged at 12).
    policy = make_policy(
        reclaim_rung(cooldown_sec=reclaim_cooldown_sec), memory_high_rung(cooldown_sec=2.0), verify_sec=2.0
    )
    driver = Driver(policy)
    driver.observe(0.0)
    assert [type(a) for a in driver.observe(10.0, share=0.5, fired=True).actions] == [Reclaim]
    return driver


def test_reclaim_that_lowered_the_stall_rate_but_left_pressure_is_repeated_instead_of_escalating() -> None:
    driver = repeat_driver()
    decision = driver.observe(12.0, share=0.2)  # still over the 15 % threshold, but 0.2 <= 0.75 x 0.5
    (action,) = decision.actions
    assert isinstance(action, Reclaim)
    assert RecordType.ESCALATED not in types_of(decision.records)
    assert action.cause.extra["HELPED_IN_PART"] == "1"
    assert action.cause.message.startswith(
        "reclaim again (rung 0) with pressure at its verdict: the full stall rate in the 2.0 s since it "
        "is 20.0 %, down from 50.0 % before the reclaims began"
    )
    assert decision.wakeup_at == 14.0  # judged again like any rung


def test_repeats_are_judged_against_the_rate_before_the_first_reclaim_and_escalate_when_they_stop() -> None:
    driver = repeat_driver()
    driver.observe(12.0, share=0.2)
    # The repeat was taken at a 20 % rate; 30 % is judged against the 50 % before any reclaim.
    (again,) = driver.observe(14.0, share=0.3).actions
    assert isinstance(again, Reclaim) and again.cause.extra["HELPED_IN_PART"] == "1"
    assert "down from 50.0 % before the reclaims began" in again.cause.message
    decision = driver.observe(16.0, share=0.45)  # more than 3/4 of 50 %: reclaim no longer helps
    assert [type(a) for a in decision.actions] == [SetMemoryHigh]
    assert RecordType.ESCALATED in types_of(decision.records)


def test_the_verdict_measures_the_rate_over_all_the_time_since_the_rung_not_the_last_look() -> None:
    driver = repeat_driver()
    driver.observe(11.9, share=0.02)  # a calm moment just before the verdict
    decision = driver.observe(
        12.0, share=1.0
    )  # 38 ms + 100 ms in 2 s: 6.9 %; its last 0.1 s alone is pressured
    (action,) = decision.actions
    assert isinstance(action, Reclaim) and "is 6.9 %, down from 50.0 %" in action.cause.message


def test_a_reclaim_repeat_held_back_by_its_cooldown_is_declined_and_the_ladder_escalates() -> None:
    driver = repeat_driver(reclaim_cooldown_sec=30.0)
    decision = driver.observe(12.0, share=0.2)
    assert [type(a) for a in decision.actions] == [SetMemoryHigh]
    declined = [r for r in decision.records if r.type is RecordType.ACTION_DECLINED]
    assert [r.extra["REASON_KEY"] for r in declined] == ["rung0:cooldown"]


def churn_verdict(activated_pages: int) -> Decision:
    """A reclaim whose stall rate did not fall (50 % before and since), while the cache it freed was
    filled again: ``file`` back where it was, the kernel stole 1 GiB meanwhile, ``activated_pages``
    of the refill were working-set refaults."""
    driver = repeat_driver()
    (first,) = driver.history[-1].actions
    assert isinstance(first, Reclaim) and first.bytes <= GiB
    stat = dict(CACHE_HEAVY_STAT)
    stat.update(pgsteal=GiB // 4096, workingset_activate_file=activated_pages)
    driver.snapshot_overrides["stat"] = stat
    return driver.observe(12.0, share=0.5)


def test_reclaim_whose_room_new_data_filled_is_repeated_as_cache_churn() -> None:
    (action,) = churn_verdict(activated_pages=1000).actions  # 3.9 MiB of 1 GiB refaulted
    assert isinstance(action, Reclaim) and action.cause.extra["HELPED_IN_PART"] == "1"
    assert "the cache refilled 1.0 GiB in the 2.0 s since it" in action.cause.message


def test_reclaim_whose_room_was_refaulted_working_set_escalates() -> None:
    decision = churn_verdict(activated_pages=GiB // 4096 // 2)  # half the refill was hot pages
    assert [type(a) for a in decision.actions] == [SetMemoryHigh]
    assert RecordType.ESCALATED in types_of(decision.records)


def test_a_follow_up_reclaim_is_judged_against_the_relieved_pressures_rate() -> None:
    driver = follow_up_driver(memory_high_rung(cooldown_sec=2.0))  # the period carries the 50 % it relieved
    driver.snapshot_overrides["current"] = int(3.6 * GiB)
    assert [type(a) for a in driver.observe(14.0).actions] == [Reclaim]  # a follow-up, on a calm look
    (action,) = driver.observe(16.0, share=0.2, fired=True).actions
    assert (
        isinstance(action, Reclaim) and "down from 50.0 % before the reclaims began" in action.cause.message
    )


def test_rung_that_helped_resets_the_ladder_without_escalating() -> None:
    driver = Driver(make_policy(reclaim_rung(cooldown_sec=60.0), memory_high_rung(), verify_sec=30.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    helped = driver.observe(40.0, share=0.02)
    assert helped.actions == ()
    assert RecordType.ESCALATED not in types_of(helped.records)
    assert driver.state.target(driver.key).rung is None
    # The next episode starts again at rung 0, once its cooldown allows it.
    again = driver.observe(75.0, share=0.5, fired=True)
    assert [type(a) for a in again.actions] == [Reclaim]


def test_exhausted_ladder_declines_once_and_restarts_at_rung_zero_after_cooldown() -> None:
    driver = Driver(make_policy(reclaim_rung(cooldown_sec=50.0), verify_sec=30.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    exhausted = driver.observe(40.0, share=0.5)
    assert types_of(exhausted.records) == [RecordType.ESCALATED, RecordType.ACTION_DECLINED]
    assert "ladder exhausted" in exhausted.records[1].message
    assert exhausted.actions == ()
    assert driver.state.target(driver.key).rung is None
    # Blocked only by the cooldown: look again exactly when it ends.
    assert exhausted.wakeup_at == 60.0
    in_cooldown = driver.observe(45.0, share=0.5, fired=True)
    assert in_cooldown.actions == ()
    assert "cooldown" in in_cooldown.records[0].message
    assert in_cooldown.wakeup_at == 60.0
    retaken = driver.observe(60.0, share=0.5)
    assert [type(a) for a in retaken.actions] == [Reclaim]


def test_cooldown_passes_over_a_rung_to_the_next_one() -> None:
    driver = Driver(make_policy(reclaim_rung(cooldown_sec=300.0), memory_high_rung(), verify_sec=30.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    driver.observe(40.0, share=0.02)  # reclaim helped
    decision = driver.observe(50.0, share=0.5, fired=True)
    assert [type(a) for a in decision.actions] == [SetMemoryHigh]
    cooldown = [r for r in decision.records if r.type is RecordType.ACTION_DECLINED]
    assert len(cooldown) == 1 and cooldown[0].action == "reclaim" and "cooldown" in cooldown[0].message


def test_max_per_hour_limits_a_rung_over_a_sliding_hour() -> None:
    driver = Driver(make_policy(reclaim_rung(cooldown_sec=0.0, max_per_hour=2), verify_sec=30.0))
    driver.observe(0.0)
    assert [type(a) for a in driver.observe(10.0, share=0.5, fired=True).actions] == [Reclaim]
    driver.observe(40.0, share=0.5)  # exhausted
    assert [type(a) for a in driver.observe(41.0, share=0.5, fired=True).actions] == [Reclaim]
    driver.observe(71.0, share=0.5)  # exhausted
    limited = driver.observe(72.0, share=0.5, fired=True)
    assert limited.actions == ()
    assert "max_per_hour 2" in limited.records[0].message
    assert driver.observe(3609.0, share=0.5, fired=True).actions == ()
    # One hour after the first take, one slot is free again.
    assert [type(a) for a in driver.observe(3611.0, share=0.5, fired=True).actions] == [Reclaim]


# ------------------------------------------------------------------ memory.high floor and other writers


def test_tmpfs_heavy_cgroup_declines_memory_high_with_the_unreclaimable_message() -> None:
    driver = Driver(
        make_policy(reclaim_rung(), memory_high_rung(fraction=0.8)),
        snapshot_overrides={"stat": TMPFS_HEAVY_STAT, "current": 4 * GiB},
    )
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.5, fired=True)
    assert decision.actions == ()
    declined = [r.message for r in decision.records if r.type is RecordType.ACTION_DECLINED]
    assert len(declined) == 2
    assert "shmem/tmpfs 3.0 GiB" in declined[0] and "reclaim cannot take" in declined[0]
    assert declined[1].startswith(
        "unreclaimable memory (anon without swap 960.0 MiB, shmem/tmpfs 3.0 GiB, kernel 32.0 MiB) leaves no "
        "room for memory.high below memory.max: lowering it would only throttle"
    )


def test_memory_high_target_is_raised_to_the_floor_when_there_is_room() -> None:
    driver = Driver(make_policy(memory_high_rung(fraction=0.5)), snapshot_overrides={"stat": ANON_HEAVY_STAT})
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.5, fired=True)
    (action,) = decision.actions
    assert isinstance(action, SetMemoryHigh)
    assert action.value == 3 * GiB + 112 * MiB
    assert "raised to the floor" in action.cause.message


def test_a_policy_holds_at_most_max_clamped_cgroups_clamps_at_once() -> None:
    # Issue 12 item 2: a tenant who creates many cgroups must not make the daemon clamp them all.
    policy = make_policy(memory_high_rung(max_clamped_cgroups=1))
    first = Driver(policy)
    first.observe(0.0)
    assert [type(a) for a in first.observe(10.0, share=0.5, fired=True).actions] == [SetMemoryHigh]
    second = Driver(policy, cgroup="system.slice/other.service", state=first.state)
    second.observe(20.0)
    decision = second.observe(30.0, share=0.5, fired=True)
    assert decision.actions == ()
    [declined] = [r for r in decision.records if r.type is RecordType.ACTION_DECLINED]
    assert (declined.extra["REASON_KEY"], declined.extra["REASON"]) == ("rung0:clamp_cap", "rate_limit")
    assert "1 cgroups of policy cache-hog already hold a memory.high of ours" in declined.message
    # Another policy's clamps are not counted against this one's cap.
    elsewhere = Driver(make_policy(memory_high_rung(max_clamped_cgroups=1), name="other"), state=first.state)
    elsewhere.observe(40.0)
    assert [type(a) for a in elsewhere.observe(50.0, share=0.5, fired=True).actions] == [SetMemoryHigh]


def test_memory_high_set_by_another_writer_is_not_fought() -> None:
    driver = Driver(make_policy(memory_high_rung()), kernel_high=3 * GiB)
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.5, fired=True)
    assert decision.actions == ()
    assert decision.records[-1].message == "memory.high is set to 3.0 GiB by another writer; not fighting it"


def test_other_writer_taking_memory_high_stands_back_and_never_restores() -> None:
    driver = Driver(make_policy(memory_high_rung(), calm_sec=60.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    assert driver.state.target(driver.key).memory_high is not None
    driver.kernel_high = 3 * GiB  # systemd daemon-reload rewrote MemoryHigh=
    decision = driver.observe(20.0, share=0.5, fired=True)
    assert len(decision.actions) == 1
    release = decision.actions[0]
    assert isinstance(release, ReleaseOwnership)
    assert (release.cgroup, release.file) == (CGROUP, "memory.high")
    assert release.cause.type is RecordType.STOOD_BACK
    assert release.cause.message == (
        f"memory.high of {CGROUP} changed from 3.2 GiB to 3.0 GiB by another writer; "
        "releasing it, not restoring"
    )
    assert driver.state.target(driver.key).memory_high is None
    for now in (40.0, 100.0, 200.0, 400.0):
        later = driver.observe(now, share=0.0)
        assert not any(isinstance(a, RestoreMemoryHigh) for a in later.actions)


def test_dry_run_stands_back_when_the_value_differs_from_ours() -> None:
    driver = Driver(make_policy(memory_high_rung()), mode="would")
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    owned = driver.state.target(driver.key).memory_high
    # Dry-run's overlay answers the value it swallowed: the core sees ours, as when enforcing.
    assert owned is not None and driver.kernel_high == owned.ours
    assert driver.observe(20.0, share=0.5, fired=True).actions == ()
    driver.kernel_high = 2 * GiB
    decision = driver.observe(25.0, share=0.5, fired=True)
    assert [type(a) for a in decision.actions] == [ReleaseOwnership]


def test_second_memory_high_is_declined_when_ours_is_already_at_target() -> None:
    driver = Driver(make_policy(memory_high_rung(cooldown_sec=0.0), verify_sec=30.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    driver.observe(40.0, share=0.5)  # exhausted
    decision = driver.observe(41.0, share=0.5, fired=True)
    assert decision.actions == ()
    assert "already 3.2 GiB (ours)" in decision.records[-1].message


# ------------------------------------------------------------------ back-off


def test_backs_off_when_our_memory_high_throttles_the_cgroup() -> None:
    policy = make_policy(memory_high_rung(cooldown_sec=10.0), verify_sec=30.0, calm_sec=120.0)
    driver = Driver(policy)
    driver.observe(0.0)
    driver.observe(10.0, share=0.3, fired=True)  # written at a 30 % stall rate
    driver.events_high = 50
    # Judged at the rung's verify time (10 + 30), not at the first look after the write.
    assert driver.observe(20.0, share=0.6, fired=True).actions == ()
    decision = driver.observe(40.0, share=0.6)  # also: the ladder is exhausted
    (restore,) = decision.actions
    assert isinstance(restore, RestoreMemoryHigh)
    assert restore.ours == page_align_down(int(4 * GiB * 0.8))
    assert restore.cause.type is RecordType.BACKED_OFF
    assert "memory.events.local high rose from 0 to 50" in restore.cause.message
    assert "stall rate from 30.0 % to 60.0 % since it was set" in restore.cause.message
    assert driver.kernel_high is None
    target = driver.state.target(driver.key)
    assert target.memory_high is None and target.memory_high_barred
    # Barred while pressure goes on ...
    barred = driver.observe(45.0, share=0.6, fired=True)
    assert barred.actions == ()
    assert "backed off" in barred.records[-1].message
    # ... and until a full calm period has passed.
    driver.observe(50.0, share=0.0)
    assert driver.observe(100.0, share=0.5, fired=True).actions == ()
    driver.observe(110.0, share=0.0)
    driver.observe(230.0, share=0.0)
    assert not driver.state.target(driver.key).memory_high_barred
    assert [type(a) for a in driver.observe(231.0, share=0.5, fired=True).actions] == [SetMemoryHigh]


def test_no_back_off_when_only_a_childs_own_memory_high_breaches_rise() -> None:
    # memory.events is hierarchical: a child squeezed under its own memory.high raises the
    # parent's "high" counter while the parent's own clamp throttles nothing (found in the VM).
    policy = make_policy(memory_high_rung(cooldown_sec=10.0), verify_sec=30.0, calm_sec=120.0)
    driver = Driver(policy)
    driver.observe(0.0)
    driver.observe(10.0, share=0.3, fired=True)
    driver.events_high = 50
    driver.snapshot_overrides["events_high_local"] = 0
    decision = driver.observe(20.0, share=0.6, fired=True)
    assert decision.actions == ()
    assert not [r for r in decision.records if r.type is RecordType.BACKED_OFF]
    assert driver.state.target(driver.key).memory_high is not None


def test_no_back_off_judged_from_a_look_moments_after_the_write() -> None:
    # A trigger event 10 ms after the clamp: 5 ms stalled in 10 ms is a 50 % "rate" that says
    # nothing about the clamp (backing off on it undid the clamp in the packaging VM test).
    policy = make_policy(memory_high_rung(cooldown_sec=10.0), verify_sec=4.0, calm_sec=120.0)
    driver = Driver(policy)
    driver.observe(0.0)
    driver.observe(10.0, share=0.3, fired=True)
    driver.events_high = 50
    assert driver.observe(10.01, share=0.9, fired=True).actions == ()
    assert driver.state.target(driver.key).memory_high is not None


def test_back_off_judges_the_stall_rate_over_all_the_time_since_the_write() -> None:
    # A burst right after the write, then calm: over the verify period the rate fell (10 % < 30 %).
    policy = make_policy(memory_high_rung(cooldown_sec=10.0), verify_sec=4.0, calm_sec=120.0)
    driver = Driver(policy)
    driver.observe(0.0)
    driver.observe(10.0, share=0.3, fired=True)
    driver.events_high = 50
    driver.observe(10.4, share=1.0, fired=True)
    decision = driver.observe(14.0, share=0.0)
    assert not [a for a in decision.actions if isinstance(a, RestoreMemoryHigh)]
    assert driver.state.target(driver.key).memory_high is not None


def test_no_back_off_when_stall_fell_after_our_write() -> None:
    driver = Driver(make_policy(memory_high_rung()))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    driver.events_high = 50
    decision = driver.observe(20.0, share=0.2, fired=True)
    assert decision.actions == ()
    assert driver.state.target(driver.key).memory_high is not None


# ------------------------------------------------------------------ reclaim follow-up


FOLLOW_UP = ReclaimFollowUp(every_sec=1.0, min_usage_fraction_of_max=0.85, for_sec=60.0)


def follow_up_driver(*above: ActionSpec, mode: str = "applied", cooldown_sec: float = 2.0) -> Driver:
    # A reclaim for a pressure at 10, judged helpful (calm) at its verify time 12; ``above``: the
    # rungs over it.
    rungs = (reclaim_rung(cooldown_sec=cooldown_sec, follow_up=FOLLOW_UP), *above)
    driver = Driver(make_policy(*rungs, verify_sec=2.0), mode=mode)
    driver.observe(0.0)
    assert [type(a) for a in driver.observe(10.0, share=0.5, fired=True).actions] == [Reclaim]
    driver.snapshot_overrides["current"] = 2 * GiB  # the reclaim made room
    assert driver.observe(12.0).actions == ()
    return driver


def test_reclaim_that_relieved_a_pressure_reclaims_again_on_a_calm_look_once_the_cache_refills() -> None:
    driver = follow_up_driver()
    assert driver.history[-1].wakeup_at == 13.0  # looks every every_sec meanwhile
    assert driver.observe(13.0).actions == ()  # 50 % of memory.max: room left
    driver.snapshot_overrides["current"] = int(3.6 * GiB)  # refilled to 90 %
    (reclaim,) = driver.observe(14.0).actions
    assert isinstance(reclaim, Reclaim)
    assert reclaim.cause.type is RecordType.ACTION_APPLIED
    assert reclaim.cause.extra["FOLLOW_UP"] == "1"
    assert reclaim.cause.message.startswith("follow-up 2 s into the 60 s after a pressure reclaim relieved")
    assert "90.0 % of memory.max (follow_up at 85.0 %)" in reclaim.cause.message


def test_follow_up_period_ends_for_sec_after_the_relieved_pressure_and_follow_ups_do_not_extend_it() -> None:
    driver = follow_up_driver()
    driver.snapshot_overrides["current"] = int(3.6 * GiB)
    assert [type(a) for a in driver.observe(14.0).actions] == [Reclaim]
    driver.observe(16.0)  # the follow-up is judged helpful: that starts no new period
    period = driver.state.target(driver.key).follow_up
    assert period is not None and period.since == 12.0
    assert [type(a) for a in driver.observe(71.0).actions] == [Reclaim]
    assert driver.observe(72.0).actions == ()  # 12 + 60: over
    assert driver.state.target(driver.key).follow_up is None
    decision = driver.observe(73.0)  # the last follow-up's verify time: then nothing is pending
    assert decision.actions == ()
    assert decision.wakeup_at is None


def test_follow_up_respects_the_rungs_cooldown_without_records() -> None:
    driver = follow_up_driver(cooldown_sec=5.0)
    driver.snapshot_overrides["current"] = int(3.6 * GiB)
    decision = driver.observe(14.0)  # reclaimed at 10: cooldown until 15
    assert decision.actions == () and decision.records == ()
    assert [type(a) for a in driver.observe(15.0).actions] == [Reclaim]


def test_follow_up_that_wrote_nothing_ends_the_period_so_dry_run_records_it_once() -> None:
    driver = follow_up_driver(mode="would")
    driver.snapshot_overrides["current"] = int(3.6 * GiB)
    assert [type(a) for a in driver.observe(14.0).actions] == [Reclaim]
    assert driver.state.target(driver.key).follow_up is None
    driver.observe(16.0)
    assert driver.observe(17.0).actions == ()


def test_no_follow_up_without_the_policy_option() -> None:
    driver = Driver(make_policy(reclaim_rung(cooldown_sec=2.0), verify_sec=2.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    decision = driver.observe(12.0)
    assert decision.wakeup_at is None
    driver.snapshot_overrides["current"] = int(3.6 * GiB)
    assert driver.observe(14.0).actions == ()
    assert driver.state.target(driver.key).follow_up is None


def test_follow_up_reclaim_that_does_not_keep_pressure_off_escalates_at_its_verify_time() -> None:
    driver = follow_up_driver(memory_high_rung(cooldown_sec=2.0))
    driver.snapshot_overrides["current"] = int(3.6 * GiB)
    assert [type(a) for a in driver.observe(14.0).actions] == [Reclaim]
    decision = driver.observe(16.0, share=0.5, fired=True)
    assert [type(a) for a in decision.actions] == [SetMemoryHigh]
    assert [r.type for r in decision.records] == [RecordType.PRESSURE_CONFIRMED, RecordType.ESCALATED]


# ------------------------------------------------------------------ rollback and wakeups


def test_rolls_back_memory_high_after_the_calm_period_not_before() -> None:
    driver = Driver(make_policy(memory_high_rung(), verify_sec=30.0, calm_sec=120.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    calm = driver.observe(40.0, share=0.0)
    assert calm.actions == ()
    assert calm.wakeup_at == 160.0
    not_yet = driver.observe(159.0, share=0.0)
    assert not_yet.actions == ()
    assert not_yet.wakeup_at == 160.0
    rolled = driver.observe(160.0, share=0.0)
    (restore,) = rolled.actions
    assert isinstance(restore, RestoreMemoryHigh)
    assert restore.cause.type is RecordType.ROLLED_BACK
    assert restore.ours == page_align_down(int(4 * GiB * 0.8))
    assert rolled.wakeup_at is None
    assert driver.state.target(driver.key).memory_high is None
    assert driver.kernel_high is None


def test_pressure_during_the_calm_period_restarts_it() -> None:
    driver = Driver(make_policy(memory_high_rung(cooldown_sec=0.0), verify_sec=30.0, calm_sec=120.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    driver.observe(40.0, share=0.0)
    driver.observe(100.0, share=0.5, fired=True)
    calm_again = driver.observe(130.0, share=0.0)
    assert calm_again.wakeup_at == 250.0
    assert driver.observe(160.0, share=0.0).actions == ()


def test_wakeup_is_none_when_idle() -> None:
    driver = Driver(make_policy(reclaim_rung()))
    assert driver.observe(0.0).wakeup_at is None
    assert driver.observe(10.0, share=0.01).wakeup_at is None
    assert driver.observe(20.0, share=0.5, fired=True).wakeup_at == 50.0
    assert driver.observe(50.0, share=0.0).wakeup_at is None


def test_open_episode_is_rechecked_so_a_silent_end_is_seen() -> None:
    driver = Driver(make_policy(memory_high_rung(), verify_sec=30.0, calm_sec=60.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    exhausted = driver.observe(40.0, share=0.5)
    # Pressure that stops sends no event: only a timed look can start the rollback.
    assert exhausted.wakeup_at == 70.0
    driver.observe(70.0, share=0.0)
    assert [type(a) for a in driver.observe(130.0, share=0.0).actions] == [RestoreMemoryHigh]


def test_open_episode_is_rechecked_even_when_nothing_is_owned() -> None:
    driver = Driver(make_policy(reclaim_rung(cooldown_sec=300.0), verify_sec=30.0))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    exhausted = driver.observe(40.0, share=0.5)
    assert exhausted.wakeup_at == 70.0
    closed = driver.observe(70.0, share=0.0)
    assert closed.wakeup_at is None
    # Much later pressure is a new episode, confirmed (and recorded) afresh.
    later = driver.observe(500.0, share=0.5, fired=True)
    assert RecordType.PRESSURE_CONFIRMED in types_of(later.records)


# ------------------------------------------------------------------ dry-run parity


def _run_ladder_scenario(mode: str) -> Driver:
    policy = make_policy(reclaim_rung(), memory_high_rung(), verify_sec=30.0, calm_sec=120.0)
    driver = Driver(policy, mode=mode)
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)  # reclaim
    driver.observe(20.0, share=0.5, fired=True)  # before verify: nothing
    driver.observe(40.0, share=0.5)  # escalate: memory.high
    driver.observe(70.0, share=0.5)  # exhausted
    driver.observe(100.0, share=0.0)  # calm
    driver.observe(220.0, share=0.0)  # rollback
    return driver


def test_dry_run_yields_the_same_record_sequence_as_enforcing() -> None:
    enforcing = _run_ladder_scenario("applied")
    dry_run = _run_ladder_scenario("would")
    enforcing_records = [without_dry_run_differences(r) for r in enforcing.all_records()]
    dry_run_records = [without_dry_run_differences(r) for r in dry_run.all_records()]
    assert dry_run_records == enforcing_records
    assert [r[0] for r in enforcing_records] == [
        RecordType.PRESSURE_CONFIRMED,
        RecordType.ACTION_APPLIED,
        RecordType.ESCALATED,
        RecordType.ACTION_APPLIED,
        RecordType.ESCALATED,
        RecordType.ACTION_DECLINED,
        RecordType.ROLLED_BACK,
    ]
    assert [type(a) for d in dry_run.history for a in d.actions] == [
        type(a) for d in enforcing.history for a in d.actions
    ]


# ------------------------------------------------------------------ node-wide


def test_node_wide_rate_limit_is_global_across_node_policies() -> None:
    config = CoreConfig(node_actions_max_per_hour=1)
    first = Driver(make_policy(drop_caches_rung(), name="node-a", node=True), cgroup=None, config=config)
    second = Driver(make_policy(drop_caches_rung(), name="node-b", node=True), cgroup=None, config=config)
    first.observe(0.0)
    second.state = first.state
    second.observe(0.0)
    first.state = second.state
    taken = first.observe(10.0, share=0.5, fired=True)
    (drop,) = taken.actions
    assert isinstance(drop, SetSysctl) and (drop.name, drop.value, drop.expected) == ("drop_caches", 1, None)
    assert drop.cause.cgroup is None and drop.cause.policy == "node-a"
    second.state = first.state
    second.total_us = first.total_us
    limited = second.observe(10.0, share=0.5, fired=True)
    assert limited.actions == ()
    assert limited.records[-1].message.startswith("node-wide action rate limit")
    second.observe(3609.0, share=0.5, fired=True)
    assert [type(a) for a in second.observe(3611.0, share=0.5, fired=True).actions] == [SetSysctl]


def test_node_wide_rung_needs_allow_node_wide_in_a_cgroup_policy() -> None:
    denied = Driver(make_policy(drop_caches_rung()))
    denied.observe(0.0)
    decision = denied.observe(10.0, share=0.5, fired=True)
    assert decision.actions == ()
    assert "does not set allow_node_wide" in decision.records[-1].message
    allowed = Driver(make_policy(drop_caches_rung(), allow_node_wide=True))
    allowed.observe(0.0)
    assert [type(a) for a in allowed.observe(10.0, share=0.5, fired=True).actions] == [SetSysctl]


def test_vfs_cache_pressure_is_raised_then_rolled_back_after_calm() -> None:
    driver = Driver(make_policy(vfs_cache_pressure_rung(200), node=True, calm_sec=60.0), cgroup=None)
    driver.observe(0.0)
    raised = driver.observe(10.0, share=0.5, fired=True)
    (action,) = raised.actions
    assert isinstance(action, SetSysctl) and (action.value, action.expected) == (200, 100)
    assert driver.node_vfs == 200
    assert driver.state.node.vfs_owner == driver.key
    driver.observe(40.0, share=0.0)
    rolled = driver.observe(100.0, share=0.0)
    (restore,) = rolled.actions
    assert isinstance(restore, RestoreSysctl) and (restore.name, restore.ours) == ("vfs_cache_pressure", 200)
    assert restore.cause.type is RecordType.ROLLED_BACK
    assert driver.node_vfs == 100 and driver.state.node.vfs_owner is None


def test_vfs_cache_pressure_changed_by_another_writer_is_released() -> None:
    driver = Driver(make_policy(vfs_cache_pressure_rung(200), node=True), cgroup=None)
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    driver.node_vfs = 150
    decision = driver.observe(20.0, share=0.5, fired=True)
    (release,) = decision.actions
    assert isinstance(release, ReleaseOwnership) and (release.cgroup, release.file) == (
        None,
        "vfs_cache_pressure",
    )
    assert release.cause.type is RecordType.STOOD_BACK
    assert driver.state.node.vfs_cache_pressure is None


def test_vfs_cache_pressure_has_one_owner_across_policies() -> None:
    first = Driver(make_policy(vfs_cache_pressure_rung(200), name="node-a", node=True), cgroup=None)
    first.observe(0.0)
    first.observe(10.0, share=0.5, fired=True)
    second = Driver(make_policy(vfs_cache_pressure_rung(300), name="node-b", node=True), cgroup=None)
    second.state = first.state
    second.node_vfs = first.node_vfs
    second.observe(0.0)
    decision = second.observe(10.0, share=0.5, fired=True)
    assert decision.actions == ()
    assert "being managed by policy node-a" in decision.records[-1].message


# ------------------------------------------------------------------ forget, exit, immutability


def test_forget_drops_the_target_and_asks_for_nothing() -> None:
    driver = Driver(make_policy(memory_high_rung()))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    forget(driver.state, driver.key)
    assert driver.key not in driver.state.targets
    assert on_exit({driver.policy.name: driver.policy}, driver.state, 20.0).actions == ()


def test_node_value_owned_by_a_gone_cgroup_is_restored_at_the_next_decision() -> None:
    policy = make_policy(vfs_cache_pressure_rung(200), allow_node_wide=True)
    driver = Driver(policy)
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    assert driver.state.node.vfs_owner == driver.key
    forget(driver.state, driver.key)
    other = TargetKey(policy.name, "system.slice/other.service")
    obs = Observation(other, cgroup_snapshot(cgroup=other.cgroup or ""), node_snapshot(vfs=200), fired=False)
    decision = decide(policy, driver.state.view(other), obs, 30.0, CoreConfig())
    (restore,) = decision.actions
    assert isinstance(restore, RestoreSysctl) and restore.ours == 200
    assert restore.cause.type is RecordType.ROLLED_BACK and "is gone" in restore.cause.message
    assert restore.cause.cgroup == CGROUP


@pytest.mark.parametrize("restore_on_exit", [True, False])
def test_on_exit_restores_only_where_the_policy_asks(restore_on_exit: bool) -> None:
    policy = make_policy(memory_high_rung(), restore_on_exit=restore_on_exit)
    driver = Driver(policy)
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    driver.observe(15.0, share=0.5, fired=True)
    decision = on_exit({policy.name: policy}, driver.state, 20.0)
    if not restore_on_exit:
        assert decision.actions == ()
        return
    (restore,) = decision.actions
    assert isinstance(restore, RestoreMemoryHigh)
    assert restore.cause.type is RecordType.ROLLED_BACK
    assert restore.cause.message.endswith("on exit")
    assert restore.cause.evidence["MEMORY_HIGH"] == str(restore.ours)
    assert decision.wakeup_at is None


def test_on_exit_leaves_values_of_policies_it_was_not_given_alone() -> None:
    kept = make_policy(memory_high_rung(), name="kept")
    dropped = make_policy(memory_high_rung(), name="dropped")
    first = Driver(kept)
    first.observe(0.0)
    first.observe(10.0, share=0.5, fired=True)
    second = Driver(dropped, state=first.state)
    second.observe(0.0)
    second.observe(10.0, share=0.5, fired=True)
    decision = on_exit({"dropped": dropped}, second.state, 20.0)
    (restore,) = decision.actions
    assert restore.cause.policy == "dropped"
    assert first.key not in decision.targets and second.key in decision.targets


def test_decide_never_mutates_what_it_was_given() -> None:
    driver = Driver(make_policy(reclaim_rung(), memory_high_rung()))
    driver.observe(0.0)
    driver.observe(10.0, share=0.5, fired=True)
    view = driver.state.view(driver.key)
    before, before_node = view.target, driver.state.node
    before_repr, target_repr = repr(view), repr(before)
    snapshot = cgroup_snapshot(driver.total_us + 15_000_000, cgroup=CGROUP)
    obs = Observation(driver.key, snapshot, node_snapshot(), fired=False)
    decision = decide(driver.policy, view, obs, 40.0, driver.config)
    assert decision.targets[driver.key] is not before
    assert repr(view) == before_repr
    # The caller's table changes only when the caller stores the decision.
    assert driver.state.target(driver.key) is before and driver.state.node is before_node
    driver.state.apply(decision)
    assert driver.state.target(driver.key) is decision.targets[driver.key]
    assert repr(before) == target_repr
    with pytest.raises(TypeError):
        driver.state.targets[driver.key] = replace(before, last_at=0.0)  # type: ignore[index]


def test_disabled_policy_measures_but_takes_no_rung() -> None:
    driver = Driver(replace(make_policy(reclaim_rung()), enabled=False))
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.5, fired=True)
    assert decision.actions == ()
    assert driver.state.target(driver.key).pressured_since == 10.0
