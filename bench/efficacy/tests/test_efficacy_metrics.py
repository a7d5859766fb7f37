"""What a run measured: stall from total deltas, work done in the window, OOM kills, the daemon's actions."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from bench.efficacy.metrics import (
    action_timeline,
    oom_kill_times,
    scanned_mib_by,
    stall_percent,
    stall_while_alive,
    summarize,
    summarize_records,
)
from remediator.records import RecordType

MIB = 1 << 20


def sample(t: float, full_us: int, oom_kill: int = 0, current: int = 0, high: int = 0) -> Dict[str, Any]:
    return {
        "t": t,
        "current": current,
        "high": None,
        "stat": {"anon": current // 2, "file": current // 2, "shmem": 0},
        "some_avg10": 0.0,
        "some_total_us": full_us * 2,
        "full_avg10": full_us / 1e6,
        "full_total_us": full_us,
        "events": {"high": high, "max": 0, "oom": oom_kill, "oom_kill": oom_kill},
    }


def record(
    kind: RecordType, action: str = "", result: str = "", t: float = 1.0, **fields: str
) -> Dict[str, Any]:
    out: Dict[str, Any] = {"MESSAGE_ID": kind.message_id, "_ARRIVED": t}
    out["MESSAGE"] = fields.pop("MESSAGE", "")
    if action:
        out["REMEDIATOR_ACTION"] = action
    if result:
        out["REMEDIATOR_RESULT"] = result
    out.update({f"REMEDIATOR_{key}": value for key, value in fields.items()})
    return out


def test_stall_share_is_the_total_delta_over_the_window_not_an_average_of_avg10() -> None:
    first = sample(0.0, full_us=5_000_000)  # stall from before the window does not count
    last = sample(10.0, full_us=7_500_000)

    assert stall_percent(first, last, "full_total_us") == 25.0
    assert stall_percent(first, last, "some_total_us") == 50.0


def test_work_reported_after_the_window_closed_does_not_count() -> None:
    progress = [
        {"event": "scan", "mib": 4.0, "arrived": 1.0},
        {"event": "anon", "mib": 100, "arrived": 2.0},
        {"event": "scan", "mib": 8.0, "arrived": 29.9},
        {"event": "scan", "mib": 12.0, "arrived": 30.2},
    ]

    assert scanned_mib_by(progress, 30.0) == 8.0


def test_work_of_a_workload_restarted_after_an_oom_kill_adds_up() -> None:
    progress = [
        {"event": "scan", "mib": 40.0, "arrived": 3.0, "incarnation": 0},
        {"event": "scan", "mib": 8.0, "arrived": 9.0, "incarnation": 1},
        {"event": "scan", "mib": 12.0, "arrived": 10.0, "incarnation": 1},
    ]

    assert scanned_mib_by(progress, 30.0) == 52.0


def test_each_oom_kill_is_timed_where_memory_events_first_showed_it() -> None:
    samples = [sample(0.0, 0), sample(0.5, 0), sample(1.0, 0, oom_kill=2), sample(1.5, 0, oom_kill=2)]

    assert oom_kill_times(samples) == [1.0, 1.0]


def test_actions_are_timed_and_reclaim_counts_what_the_kernel_completed_or_dry_run_would_ask() -> None:
    records = [
        record(
            RecordType.ACTION_APPLIED, "reclaim", "partial", t=3.0,
            RECLAIM_ASKED_BYTES=str(128 * MIB), RECLAIM_COMPLETED_BYTES=str(64 * MIB),
            BEFORE=str(256 * MIB), AFTER=str(200 * MIB),
        ),
        record(RecordType.ACTION_APPLIED, "reclaim", "would", t=5.0, RECLAIM_ASKED_BYTES=str(32 * MIB)),
        record(RecordType.ACTION_APPLIED, "memory_high", "applied", t=7.0, AFTER="241590272"),
        record(RecordType.ACTION_APPLIED, "memory_high", "stood_back", t=9.0),
    ]  # fmt: skip

    records[0]["_DECIDED"] = 2.5  # prompted by a trigger: the daemon says when it decided

    timeline = action_timeline(records)

    assert [(a["t"], a["kind"]) for a in timeline] == [
        (3.0, "reclaim"),
        (5.0, "reclaim"),
        (7.0, "memory_high"),
    ]
    assert [a["decided"] for a in timeline] == [2.5, 5.0, 7.0]
    assert timeline[0]["bytes"] == 64 * MIB
    assert timeline[0]["current_drop_bytes"] == 56 * MIB
    assert timeline[1]["bytes"] == 32 * MIB
    assert timeline[2]["value"] == "241590272"


def test_record_summary_counts_by_type_and_keeps_one_explanation_per_reason() -> None:
    declined = "unreclaimable memory (anon 115 MiB) leaves no room for memory.high below memory.max"
    records = [
        record(RecordType.ACTION_APPLIED, "reclaim", "applied", RECLAIM_COMPLETED_BYTES=str(MIB)),
        record(RecordType.ACTION_DECLINED, "memory_high", "declined", t=2.0, MESSAGE=declined + ": a"),
        record(RecordType.ACTION_DECLINED, "memory_high", "declined", t=9.0, MESSAGE=declined + ": b"),
    ]

    summary = summarize_records(records)

    assert summary["records_by_type"] == {"ACTION_APPLIED": 1, "ACTION_DECLINED": 2}
    assert summary["actions"] == {"reclaim": {"count": 1, "bytes": MIB}}
    assert [e["t"] for e in summary["explanations"]] == [2.0]


def test_summary_of_a_run_without_a_daemon_has_no_remediator_section() -> None:
    samples: List[Dict[str, Any]] = [sample(float(t), t * 100_000, current=t * MIB) for t in range(11)]
    run: Dict[str, Optional[Any]] = {
        "samples": samples,
        "progress": [{"event": "scan", "mib": 500.0, "arrived": 9.0}],
    }

    metrics = summarize(run)

    assert metrics["full_stall_pct"] == 10.0
    assert metrics["throughput_mib_s"] == 50.0
    assert metrics["peak_current"] == 10 * MIB
    assert metrics["full_avg10_mean_second_half"] == 0.75  # samples at 5..10 s
    assert "remediator" not in metrics


def test_stall_of_a_killed_workload_is_measured_over_its_life_not_the_window() -> None:
    samples = [sample(0.0, 0), sample(5.0, 1_000_000), sample(10.5, 2_000_000), sample(30.0, 2_000_000)]

    assert stall_while_alive(samples, [{"code": -9, "at_sec": 10.0}]) == (10.0, 20.0)
    assert stall_while_alive(samples, []) == (30.0, round(100 * 2 / 30, 2))


def test_a_workload_that_was_restarted_lived_the_whole_window() -> None:
    samples = [sample(float(t), t * 100_000) for t in range(31)]
    run = {"samples": samples, "progress": [], "workload_exits": [{"code": -9, "at_sec": 10.0}]}

    assert summarize(run)["alive_sec"] == 10.0
    assert summarize({**run, "restart_on_oom_kill": True})["alive_sec"] == 30.0
