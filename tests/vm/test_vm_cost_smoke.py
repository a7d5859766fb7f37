"""The cost benchmark's CI smoke shape (N = 10, 5 pressure events), so bench/cost cannot rot.

It runs the same guest code as ``make bench-cost`` and feeds the reports to the
same summary, then checks what the benchmark relies on: every cgroup watched,
the idle daemon almost never wakes, new cgroups are picked up, the kernel's
psimon threads go away with the triggers, and every pressure event ends in a
write whose reaction-time fields come in order, then a rollback. No absolute
speed is asserted: under TCG, next to other VMs, times are not comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest

from bench.cost import report, run
from tests.vm import harness

pytestmark = pytest.mark.vm

N = 10
EVENTS = 5
IDLE_SEC = 10.0


def _series(label: str, guest_args: List[str], timeout_sec: float) -> run.Series:
    return run.Series(label, guest_args, N, timeout_sec)


def test_scale_at_ten_cgroups_watches_all_wakes_rarely_and_picks_up_new_cgroups(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    args = ["scale", "--n", str(N), "--idle-sec", str(IDLE_SEC), "--pickup", str(run.PICKUP_COUNT)]
    doc = run.run_series(vm_light, _series("scale-smoke", args, 900), tmp_path)
    assert "error" not in doc, doc.get("error")

    scale: Dict[str, Any] = doc["scale"]
    remediator, baseline = scale["remediator"], scale["baseline"]
    assert remediator["watched_at_ready"] == N
    assert remediator["exit_code"] == 0
    # Idle means blocked in poll(): one rescan every 10 s, nothing else.
    assert remediator["idle"]["voluntary_switches"] <= IDLE_SEC * report.TARGET_WAKEUPS_PER_SEC
    assert remediator["pickup"]["complete"] and remediator["pickup"]["watched"] == run.PICKUP_COUNT
    assert baseline["pickup"]["complete"]
    # Closing the triggers takes the kernel's poller threads with them.
    assert remediator["psimon_threads_after_stop"] == scale["psimon_threads_before"]
    assert scale["remediator_sub2s"]["watched_at_ready"] == N

    results = report.summarize([doc], {"date": "smoke"})
    (row,) = results["scale"]
    assert row["ratios"]["idle_cpu_share"] is not None
    assert "## Targets" in report.render_markdown(results)


def test_reaction_events_end_in_a_timed_write_then_a_rollback(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    args = ["reaction", "--n", str(N), "--events", str(EVENTS)]
    doc = run.run_series(vm_light, _series("reaction-smoke", args, 1200), tmp_path)
    assert "error" not in doc, doc.get("error")

    remediator = doc["reaction"]["remediator"]
    assert remediator["daemon_exit_code"] == 0
    events = remediator["events"]
    assert len(events) == EVENTS
    for event in events:
        assert "error" not in event, event
        assert event["result"] == "applied"
        assert event["woken"] <= event["decided"] <= event["written"] <= event["record_arrived"]
        assert event["kernel_event"] is not None
        assert event["rolled_back"]
    baseline = doc["reaction"]["baseline"]
    # The 1 s polling baseline is the comparison, not the product: on a loaded, emulated host its
    # loop can miss an event's time limit (seen in a CI run next to three other VMs). It must run
    # every event and fail only that way; how often it misses is a figure of the benchmark.
    assert len(baseline["events"]) == EVENTS
    missed = [e for e in baseline["events"] if "error" in e]
    assert all(e["error"] == "no action within the time limit" for e in missed), missed

    results = report.summarize([doc], {"date": "smoke"})
    summaries = {r["mode"]: r for r in results["reaction"]}
    assert summaries["remediator"]["usable_events"] == EVENTS
    assert summaries["remediator"]["spans_sec"]["event_to_written"]["count"] == EVENTS
