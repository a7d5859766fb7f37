"""Repeated records are coalesced: the first goes out, then one summary per window with a count."""

from __future__ import annotations

from typing import List

from remediator.daemon.coalesce import COALESCE_INTERVAL_SEC, RecordCoalescer
from remediator.records import Knob, Record, RecordType, Result

APP = "system.slice/app.service"


def would_reclaim(n: int, cgroup: str = APP) -> Record:
    return Record(
        RecordType.ACTION_APPLIED,
        f"reclaim {n} MiB from {cgroup}",
        policy="cache-heavy",
        cgroup=cgroup,
        action=Knob.RECLAIM,
        result=Result.APPLIED,
        dry_run=True,
    )


def escalated() -> Record:
    return Record(RecordType.ESCALATED, "pressure did not fall", policy="cache-heavy", cgroup=APP)


def test_sustained_pressure_writes_the_first_record_then_one_summary_per_window() -> None:
    coalescer = RecordCoalescer()
    written: List[Record] = []
    # The measured case: a record every 2 s for 10 minutes, of two kinds.
    for step in range(300):
        now = 2.0 * step
        written += coalescer.admit(would_reclaim(step), now)
        written += coalescer.admit(escalated(), now + 0.1)
    written += coalescer.flush(600.0)
    reclaims = [r for r in written if r.type is RecordType.ACTION_APPLIED]
    # 10 windows of 60 s: the first record of each and one summary of the other 29.
    assert len(reclaims) == 20
    assert reclaims[0].message == "reclaim 0 MiB from system.slice/app.service"
    summary = reclaims[1]
    assert summary.message == "reclaim 29 MiB from system.slice/app.service (repeated 29 more times in 60 s)"
    assert (summary.extra["REPEATED"], summary.extra["REPEATED_SEC"]) == ("29", "60")
    assert sum(int(r.extra.get("REPEATED", "1")) for r in reclaims) == 300  # no count is lost
    assert len([r for r in written if r.type is RecordType.ESCALATED]) == 20


def test_records_of_other_targets_results_and_reasons_are_not_held_back() -> None:
    coalescer = RecordCoalescer()
    other = would_reclaim(1, cgroup="system.slice/db.service")
    failed = Record(RecordType.ACTION_FAILED, "reclaim failed", policy="cache-heavy", cgroup=APP,
                    action=Knob.RECLAIM, result=Result.FAILED)  # fmt: skip
    declined_floor = Record(RecordType.ACTION_DECLINED, "at the floor", policy="cache-heavy", cgroup=APP,
                            result=Result.DECLINED, extra={"REASON": "floor"})  # fmt: skip
    declined_cooldown = Record(RecordType.ACTION_DECLINED, "cooling down", policy="cache-heavy", cgroup=APP,
                               result=Result.DECLINED, extra={"REASON": "cooldown"})  # fmt: skip
    records = [would_reclaim(1), other, failed, declined_floor, declined_cooldown]
    assert [out for r in records for out in coalescer.admit(r, 1.0)] == records


def test_daemon_records_always_go_out() -> None:
    coalescer = RecordCoalescer()
    reloaded = Record(RecordType.DAEMON_RELOADED, "reloaded")
    assert coalescer.admit(reloaded, 0.0) == [reloaded]
    assert coalescer.admit(reloaded, 1.0) == [reloaded]


def test_a_summary_is_due_when_its_window_ends_without_another_record() -> None:
    coalescer = RecordCoalescer()
    coalescer.admit(would_reclaim(1), 0.0)
    coalescer.admit(would_reclaim(2), 5.0)
    assert coalescer.due(COALESCE_INTERVAL_SEC - 1) == []
    [summary] = coalescer.due(COALESCE_INTERVAL_SEC)
    assert summary.extra["REPEATED"] == "1"
    # The window is closed: the next record is written in full and opens another.
    assert coalescer.admit(would_reclaim(3), 70.0) == [would_reclaim(3)]
    assert coalescer.flush(71.0) == []
