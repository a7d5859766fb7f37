"""Every decline the core makes carries REASON (a fixed label set) and REASON_KEY (its stable key).

The label is what ``remediator_declines_total{reason}`` counts and what an alert is written on
(``floor`` and ``not_reclaimable``: remediation cannot help), so ``journalctl REMEDIATOR_REASON=floor``
finds the records behind the alert.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import pytest

from remediator.core.reasons import (
    REASON_FIELD,
    REASON_KEY_FIELD,
    DeclineReason,
    decline_reason,
    reason_fields,
)
from remediator.policy.compiled import Conditions
from remediator.records import Record, RecordType
from tests.unit.test_core_builders import Driver, make_policy, memory_high_rung, reclaim_rung
from tests.unit.test_core_decide import TMPFS_HEAVY_STAT


def _declines(records: Tuple[Record, ...]) -> List[Dict[str, str]]:
    return [
        {k: r.extra[k] for k in (REASON_FIELD, REASON_KEY_FIELD, "RUNG") if k in r.extra}
        for r in records
        if r.type is RecordType.ACTION_DECLINED
    ]


def test_floor_and_not_reclaimable_declines_carry_their_labels_and_keys() -> None:
    driver = Driver(
        make_policy(reclaim_rung(), memory_high_rung(fraction=0.8)),
        snapshot_overrides={"stat": TMPFS_HEAVY_STAT, "current": 4 << 30},
    )
    driver.observe(0.0)
    decision = driver.observe(10.0, share=0.5, fired=True)
    assert _declines(decision.records) == [
        {"REASON": "not_reclaimable", "REASON_KEY": "rung0:too_little_cache", "RUNG": "0"},
        {"REASON": "floor", "REASON_KEY": "rung1:no_room_above_floor", "RUNG": "1"},
    ]


def test_no_kernel_support_cooldown_conditions_and_exhausted_ladder_labels() -> None:
    no_reclaim = Driver(make_policy(reclaim_rung(), memory_high_rung()))
    no_reclaim.observe(0.0)
    decision = no_reclaim.observe(10.0, share=0.5, fired=True, reclaim_supported=False)
    assert _declines(decision.records)[0]["REASON"] == "no_kernel_support"

    condition = Driver(make_policy(reclaim_rung(), conditions=Conditions(min_usage_fraction_of_max=0.9)))
    condition.observe(0.0)
    decision = condition.observe(10.0, share=0.5, fired=True)
    assert _declines(decision.records) == [
        {"REASON": "conditions", "REASON_KEY": "condition:min_usage_fraction_of_max"}
    ]

    ladder = Driver(make_policy(reclaim_rung(cooldown_sec=50.0), verify_sec=30.0))
    ladder.observe(0.0)
    ladder.observe(10.0, share=0.5, fired=True)
    exhausted = ladder.observe(40.0, share=0.5)
    assert _declines(exhausted.records) == [{"REASON": "ladder_exhausted", "REASON_KEY": "ladder_exhausted"}]
    in_cooldown = ladder.observe(45.0, share=0.5, fired=True)
    assert _declines(in_cooldown.records) == [
        {"REASON": "cooldown", "REASON_KEY": "rung0:cooldown", "RUNG": "0"}
    ]


@pytest.mark.parametrize("reason", list(DeclineReason))
def test_a_label_maps_to_itself(reason: DeclineReason) -> None:
    assert decline_reason(reason.value) is reason


def test_reason_fields_of_an_unknown_key_are_other_and_keep_the_key() -> None:
    assert reason_fields("rung3:something_new") == {"REASON": "other", "REASON_KEY": "rung3:something_new"}
