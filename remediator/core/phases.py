"""A target's phase, and the transitions between phases, as data (issue 11 item 4).

The core keeps per target the facts it needs (when an episode opened, when calm
began, the rung pending verification, the follow-up period): ``phase_of`` names
the phase those facts put the target in, and ``TRANSITIONS`` lists every move
from one phase to another that a decision may make, each with the reason in
words. ``decide`` checks its own move against the table: a move the table does
not list is a bug in the core, reported by a record (never a crash: a daemon
that stopped would leave its clamps in place), and pinned by a table-driven
test that reaches every listed move.
"""

from __future__ import annotations

import enum
from typing import Mapping, Tuple

from remediator.core.state import TargetState


class Phase(str, enum.Enum):
    IDLE = "idle"  # no episode, nothing pending, nothing of ours waiting for calm
    PRESSURED = "pressured"  # an episode is open: sustaining, or acting with no rung pending
    VERIFYING = "verifying"  # a rung was taken; it is judged at taken_at + verify_sec
    CALM = "calm"  # the episode closed; calm counts toward rolling back what the target owns
    FOLLOWING_UP = "following_up"  # a reclaim relieved a pressure: reclaim again as the cache refills

    def __str__(self) -> str:
        return self.value


def phase_of(target: TargetState, owns_vfs: bool) -> Phase:
    """The phase ``target``'s facts put it in (``owns_vfs``: it owns vm.vfs_cache_pressure)."""
    if target.rung is not None:
        return Phase.VERIFYING
    if target.pressured_since is not None:
        return Phase.PRESSURED
    if target.follow_up is not None:
        return Phase.FOLLOWING_UP
    if target.calm_since is not None and (target.memory_high is not None or owns_vfs):
        return Phase.CALM
    return Phase.IDLE


_P = Phase
TRANSITIONS: Mapping[Tuple[Phase, Phase], str] = {
    (_P.IDLE, _P.IDLE): "a calm look, a baseline, or an unconfirmed trigger event",
    (_P.IDLE, _P.PRESSURED): "pressure: the episode opens (not sustained yet, or declined)",
    (_P.IDLE, _P.VERIFYING): "pressure sustained at once (sustained_sec 0): the first eligible rung is taken",
    (_P.PRESSURED, _P.PRESSURED): "pressure goes on: sustaining, or every rung declined",
    (_P.PRESSURED, _P.VERIFYING): "the episode lasted sustained_sec (or a limit ran out): a rung is taken",
    (_P.PRESSURED, _P.IDLE): "calm: the episode closes, and the target owns nothing",
    (_P.PRESSURED, _P.CALM): "calm: the episode closes; what the target owns waits for calm_sec",
    (_P.PRESSURED, _P.FOLLOWING_UP): "calm: the episode closes inside a reclaim follow-up period",
    (_P.VERIFYING, _P.VERIFYING): (
        "before the verify time; or pressure at it and the next rung is taken, or the same reclaim "
        "again (it helped in part)"
    ),
    (_P.VERIFYING, _P.PRESSURED): "pressure at the verify time and no rung above can be taken (exhausted)",
    (_P.VERIFYING, _P.IDLE): "calm at the verify time: the rung helped, nothing is owned",
    (_P.VERIFYING, _P.CALM): "calm at the verify time: the rung helped; what is owned waits for calm_sec",
    (_P.VERIFYING, _P.FOLLOWING_UP): "calm at the verify time of a reclaim with follow_up: it helped",
    (_P.CALM, _P.CALM): "calm goes on, shorter than calm_sec",
    (_P.CALM, _P.IDLE): "calm lasted calm_sec: what the target owns is rolled back (or released)",
    (_P.CALM, _P.PRESSURED): "pressure again before the calm period ended",
    (_P.CALM, _P.VERIFYING): "pressure again, sustained at once: a rung is taken",
    (_P.FOLLOWING_UP, _P.FOLLOWING_UP): "a calm look in the period that did not reclaim",
    (_P.FOLLOWING_UP, _P.VERIFYING): "a follow-up reclaim (or pressure and a rung) is taken",
    (_P.FOLLOWING_UP, _P.PRESSURED): "pressure in the period, not acted on yet",
    (_P.FOLLOWING_UP, _P.IDLE): "the period (for_sec) ended, or a follow-up wrote nothing",
    (_P.FOLLOWING_UP, _P.CALM): "the period ended while a value of ours waits for calm_sec",
}
