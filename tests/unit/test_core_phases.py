"""Every move of the phase table is reached, and each scenario moves only as the table says (issue 11).

Each scenario drives the pure core through the Driver (watcher + executor played at explicit
times) and names the moves it must make, in order; together they reach every entry of
``TRANSITIONS``. ``decide`` itself reports a move the table does not list (INTERNAL_ERROR): no
scenario may produce one.
"""

from __future__ import annotations

from typing import Callable, List, Set, Tuple

import pytest

from remediator.core.decide import _owns_vfs
from remediator.core.phases import TRANSITIONS, Phase, phase_of
from remediator.records import RecordType
from tests.unit.test_core_builders import Driver, GiB, make_policy, memory_high_rung, reclaim_rung
from tests.unit.test_core_decide import FOLLOW_UP

IDLE, PRES, VERI, CALM, FOLL = Phase.IDLE, Phase.PRESSURED, Phase.VERIFYING, Phase.CALM, Phase.FOLLOWING_UP
Move = Tuple[Phase, Phase]


class Recorder:
    """Wraps a Driver: every observation's (phase before, phase after)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.moves: List[Move] = []

    def look(self, now: float, share: float = 0.0, fired: bool = False) -> None:
        d = self.driver
        before = phase_of(d.state.target(d.key), _owns_vfs(d.state.node, d.key))
        decision = d.observe(now, share=share, fired=fired)
        assert RecordType.INTERNAL_ERROR not in [r.type for r in decision.records], decision.records
        self.moves.append((before, decision.phase))


def sustain_then_exhaust() -> Recorder:
    r = Recorder(Driver(make_policy(reclaim_rung(), sustained_sec=30.0, verify_sec=30.0)))
    r.look(0.0)  # baseline
    r.look(1.0, 0.5, fired=True)  # the episode opens
    r.look(5.0, 0.5)  # sustaining
    r.look(31.0, 0.5)  # sustained: reclaim
    r.look(40.0, 0.5)  # before its verify time
    r.look(61.0, 0.5)  # still pressured at it, no rung above: exhausted
    r.look(65.0, 0.0)  # calm, nothing owned
    return r


def clamp_then_calm_then_pressure() -> Recorder:
    ladder = (reclaim_rung(cooldown_sec=0.0), memory_high_rung(cooldown_sec=0.0))
    r = Recorder(Driver(make_policy(*ladder, verify_sec=10.0, calm_sec=100.0)))
    r.look(0.0)
    r.look(10.0, 0.5, fired=True)  # sustained at once: reclaim
    r.look(20.0, 0.5)  # pressure at the verify time: memory.high is the next rung
    r.look(30.0, 0.0)  # calm at its verify time: it helped, memory.high is ours
    r.look(31.0, 0.0)  # calm goes on
    r.look(32.0, 0.5, fired=True)  # pressure again, sustained at once: reclaim
    return r


def sustained_pressure_around_a_clamp() -> Recorder:
    r = Recorder(Driver(make_policy(memory_high_rung(), sustained_sec=5.0, verify_sec=10.0, calm_sec=100.0)))
    r.look(0.0)
    r.look(1.0, 0.5, fired=True)  # the episode opens
    r.look(6.0, 0.5)  # sustained: memory.high
    r.look(16.0, 0.0)  # calm at its verify time: ours, waiting for calm_sec
    r.look(17.0, 0.5, fired=True)  # pressure again: sustaining
    r.look(18.0, 0.0)  # calm again: the clamp waits on
    r.driver.kernel_high = 3 * GiB  # another writer takes memory.high over
    r.look(19.0, 0.0)  # stood back: nothing of ours is left
    return r


def unsustained_pressure_on_an_idle_target() -> Recorder:
    r = Recorder(Driver(make_policy(reclaim_rung(), sustained_sec=30.0)))
    r.look(0.0)
    r.look(0.5)  # calm on an idle target
    r.look(1.0, 0.5, fired=True)
    r.look(2.0, 0.0)  # calm before it was sustained
    return r


def a_reclaim_that_helped() -> Recorder:
    r = Recorder(Driver(make_policy(reclaim_rung(), verify_sec=10.0)))
    r.look(0.0)
    r.look(10.0, 0.5, fired=True)  # sustained at once: reclaim
    r.look(20.0, 0.0)  # calm at its verify time: it helped, nothing owned, no follow-up
    return r


def follow_up_period() -> Recorder:
    driver = Driver(make_policy(reclaim_rung(cooldown_sec=2.0, follow_up=FOLLOW_UP), verify_sec=2.0))
    r = Recorder(driver)
    r.look(0.0)
    r.look(10.0, 0.5, fired=True)  # reclaim
    driver.snapshot_overrides["current"] = 2 * GiB  # it made room
    r.look(12.0)  # calm at its verify time: the follow-up period starts
    r.look(13.0)  # room left: nothing to do
    driver.snapshot_overrides["current"] = int(3.6 * GiB)  # the cache refilled
    r.look(14.0)  # a follow-up reclaim
    driver.snapshot_overrides["current"] = 2 * GiB  # it made room again
    r.look(16.0)  # judged helpful; back in the period, nothing to take
    r.look(72.0)  # 12 + 60: the period is over
    return r


def pressure_during_a_follow_up_period() -> Recorder:
    driver = Driver(
        make_policy(reclaim_rung(cooldown_sec=2.0, follow_up=FOLLOW_UP), verify_sec=2.0, sustained_sec=5.0)
    )
    r = Recorder(driver)
    r.look(0.0)
    r.look(1.0, 0.5, fired=True)
    r.look(6.0, 0.5)  # sustained: reclaim
    driver.snapshot_overrides["current"] = 2 * GiB
    r.look(8.0)  # it helped: the period starts
    r.look(9.0, 0.5, fired=True)  # pressure in the period: sustaining again
    r.look(10.0)  # calm before it was sustained: back in the period
    return r


def follow_up_ends_while_a_clamp_waits() -> Recorder:
    ladder = (reclaim_rung(cooldown_sec=2.0, follow_up=FOLLOW_UP), memory_high_rung(cooldown_sec=0.0))
    driver = Driver(make_policy(*ladder, verify_sec=2.0, calm_sec=1000.0))
    r = Recorder(driver)
    r.look(0.0)
    r.look(10.0, 0.5, fired=True)  # reclaim
    r.look(12.0, 0.5)  # pressure at the verify time: memory.high
    r.look(14.0, 0.5)  # still pressured at its verify time: exhausted (reclaim cools down)
    r.look(15.0, 0.5, fired=True)  # reclaim again
    driver.snapshot_overrides["current"] = 2 * GiB
    r.look(17.0)  # it helped: a period starts, while memory.high is ours
    r.look(78.0)  # the period is over; the clamp still waits for its calm
    return r


SCENARIOS: List[Tuple[Callable[[], Recorder], List[Move]]] = [
    (
        sustain_then_exhaust,
        [(IDLE, IDLE), (IDLE, PRES), (PRES, PRES), (PRES, VERI), (VERI, VERI), (VERI, PRES), (PRES, IDLE)],
    ),
    (
        clamp_then_calm_then_pressure,
        [(IDLE, IDLE), (IDLE, VERI), (VERI, VERI), (VERI, CALM), (CALM, CALM), (CALM, VERI)],
    ),
    (
        sustained_pressure_around_a_clamp,
        [(IDLE, IDLE), (IDLE, PRES), (PRES, VERI), (VERI, CALM), (CALM, PRES), (PRES, CALM), (CALM, IDLE)],
    ),
    (unsustained_pressure_on_an_idle_target, [(IDLE, IDLE), (IDLE, IDLE), (IDLE, PRES), (PRES, IDLE)]),
    (a_reclaim_that_helped, [(IDLE, IDLE), (IDLE, VERI), (VERI, IDLE)]),
    (
        follow_up_period,
        [(IDLE, IDLE), (IDLE, VERI), (VERI, FOLL), (FOLL, FOLL), (FOLL, VERI), (VERI, FOLL), (FOLL, IDLE)],
    ),
    (
        pressure_during_a_follow_up_period,
        [(IDLE, IDLE), (IDLE, PRES), (PRES, VERI), (VERI, FOLL), (FOLL, PRES), (PRES, FOLL)],
    ),
    (
        follow_up_ends_while_a_clamp_waits,
        [(IDLE, IDLE), (IDLE, VERI), (VERI, VERI), (VERI, PRES), (PRES, VERI), (VERI, FOLL), (FOLL, CALM)],
    ),
]


@pytest.mark.parametrize("scenario, expected", SCENARIOS, ids=[s.__name__ for s, _ in SCENARIOS])
def test_each_scenario_moves_through_the_phases_it_names(
    scenario: Callable[[], Recorder], expected: List[Move]
) -> None:
    assert scenario().moves == expected


def test_the_scenarios_reach_every_move_of_the_table_and_no_other() -> None:
    reached: Set[Move] = {move for _, moves in SCENARIOS for move in moves}
    assert reached == set(TRANSITIONS)
