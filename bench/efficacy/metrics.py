"""What one run measured, computed from its samples, the workload's progress and the daemon's records.

Pure functions on the run's JSON (no I/O), so they are unit-tested on
hand-made runs and recomputed from committed results.

Stall is taken from the ``total`` counters of memory.pressure (microseconds
stalled since the cgroup was created): the delta over the window divided by the
window is the share of the run the cgroup stalled, independent of how the
avg10 decaying averages happened to be sampled.
"""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from remediator.records import RecordType

RECORD_NAMES = {record_type.message_id: record_type.name for record_type in RecordType}
# Results of a record that mean the action was (or, in dry-run, would have been) carried out.
DONE_RESULTS = frozenset({"applied", "partial", "would"})
MIB = 1 << 20


def stall_percent(first: Mapping[str, Any], last: Mapping[str, Any], key: str) -> float:
    span_us = float(last["t"] - first["t"]) * 1e6
    if span_us <= 0:
        return 0.0
    return 100.0 * float(last[key] - first[key]) / span_us


def scanned_mib_by(progress: Sequence[Mapping[str, Any]], end_t: float) -> float:
    """MiB the workload had scanned when the window closed: the last report before then of
    each incarnation (the runner restarts a workload the OOM killer killed), summed."""
    by_incarnation: Dict[int, float] = {}
    for event in progress:
        if event.get("event") == "scan" and event["arrived"] <= end_t:
            incarnation = int(event.get("incarnation", 0))
            by_incarnation[incarnation] = max(by_incarnation.get(incarnation, 0.0), float(event["mib"]))
    return sum(by_incarnation.values())


def oom_kill_times(samples: Sequence[Mapping[str, Any]]) -> List[float]:
    """The sample time at which each OOM kill was first seen (one entry per kill)."""
    times: List[float] = []
    previous = samples[0]["events"]["oom_kill"] if samples else 0
    for sample in samples[1:]:
        count = sample["events"]["oom_kill"]
        times.extend([sample["t"]] * max(0, count - previous))
        previous = max(previous, count)
    return times


def stall_while_alive(
    samples: Sequence[Mapping[str, Any]], exits: Sequence[Mapping[str, Any]]
) -> Tuple[float, float]:
    """(seconds the workload lived in the window, full stall % over that time).

    A workload killed early stalls for a shorter part of the window: its stall share of
    the window says when it died more than how it lived. ``exits`` are the workload's
    exits when it was not restarted (a restarted workload lives the whole window)."""
    first, last = samples[0], samples[-1]
    died = [float(e["at_sec"]) for e in exits if e.get("code") == -9]
    if not died or died[0] >= last["t"]:
        return round(last["t"] - first["t"], 2), round(stall_percent(first, last, "full_total_us"), 2)
    end = died[0]
    # No stall accrues once the cgroup is empty: the first sample after the death closes the span.
    after = next((s for s in samples if s["t"] >= end), last)
    span = end - first["t"]
    if span <= 0:
        return 0.0, 0.0
    stalled_us = after["full_total_us"] - first["full_total_us"]
    return round(span, 2), round(100.0 * stalled_us / (span * 1e6), 2)


def _interval_stall(samples: Sequence[Mapping[str, Any]], key: str) -> List[Dict[str, float]]:
    """Stall share of each sampling interval, from total deltas (for plots)."""
    out: List[Dict[str, float]] = []
    for before, after in zip(samples, samples[1:]):
        dt = after["t"] - before["t"]
        if dt > 0:
            out.append({"t": after["t"], "pct": 100.0 * (after[key] - before[key]) / (dt * 1e6)})
    return out


def _int_field(record: Mapping[str, Any], name: str) -> Optional[int]:
    value = record.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def action_timeline(records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Every action the daemon carried out (or would have, in dry-run), in order, with its amount."""
    applied_id = RecordType.ACTION_APPLIED.message_id
    out: List[Dict[str, Any]] = []
    for record in records:
        if record.get("MESSAGE_ID") != applied_id or record.get("REMEDIATOR_RESULT") not in DONE_RESULTS:
            continue
        kind = record.get("REMEDIATOR_ACTION", "")
        entry: Dict[str, Any] = {
            # When the write returned (the record is written after it), and when it was
            # decided where the daemon says so (observations a trigger prompted).
            "t": record.get("_ARRIVED"),
            "decided": record.get("_DECIDED", record.get("_ARRIVED")),
            "kind": kind,
            "result": record.get("REMEDIATOR_RESULT"),
            "cgroup": record.get("REMEDIATOR_CGROUP"),
        }
        if kind == "reclaim":
            # Completed bytes when enforcing; what it would have asked for in dry-run.
            completed = _int_field(record, "REMEDIATOR_RECLAIM_COMPLETED_BYTES")
            asked = _int_field(record, "REMEDIATOR_RECLAIM_ASKED_BYTES")
            entry["bytes"] = completed if record.get("REMEDIATOR_RESULT") != "would" else asked
            before = _int_field(record, "REMEDIATOR_BEFORE")
            after = _int_field(record, "REMEDIATOR_AFTER")
            if before is not None and after is not None:
                entry["current_drop_bytes"] = before - after
        else:
            entry["value"] = record.get("REMEDIATOR_AFTER")
        out.append(entry)
    return out


def summarize_records(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Counts by record type, the actions by kind with their amounts, and why actions were declined."""
    by_type: Dict[str, int] = {}
    for record in records:
        name = RECORD_NAMES.get(str(record.get("MESSAGE_ID")), "OTHER")
        by_type[name] = by_type.get(name, 0) + 1
    timeline = action_timeline(records)
    kinds: Dict[str, Dict[str, Any]] = {}
    for entry in timeline:
        kind = kinds.setdefault(entry["kind"], {"count": 0})
        kind["count"] += 1
        if "bytes" in entry and entry["bytes"] is not None:
            kind["bytes"] = kind.get("bytes", 0) + entry["bytes"]
        if entry.get("value") is not None:
            kind.setdefault("values", []).append(entry["value"])
    declined_id = RecordType.ACTION_DECLINED.message_id
    explanations = {
        RecordType.ACTION_DECLINED.message_id,
        RecordType.BACKED_OFF.message_id,
        RecordType.ESCALATED.message_id,
        RecordType.STOOD_BACK.message_id,
    }
    why: List[Dict[str, Any]] = []
    seen = set()
    for record in records:
        if record.get("MESSAGE_ID") not in explanations:
            continue
        message = str(record.get("MESSAGE", ""))
        key = (record.get("MESSAGE_ID"), record.get("REMEDIATOR_ACTION"), message.split(":", maxsplit=1)[0])
        if key in seen:
            continue
        seen.add(key)
        why.append(
            {
                "t": record.get("_ARRIVED"),
                "type": RECORD_NAMES.get(str(record.get("MESSAGE_ID")), "OTHER"),
                "action": record.get("REMEDIATOR_ACTION", ""),
                "declined": record.get("MESSAGE_ID") == declined_id,
                "message": message,
            }
        )
    return {"records_by_type": by_type, "actions": kinds, "timeline": timeline, "explanations": why}


def percentile(values: Sequence[float], share: float) -> Optional[float]:
    """The nearest-rank percentile (share in 0..1): a value that was measured, not interpolated."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -int(-share * len(ordered) // 1)))
    return ordered[rank - 1]


def tool_result(progress: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The summary a real tool printed at its end (fio, pgbench: tools.py), if it got to."""
    results = [event for event in progress if event.get("event") == "result"]
    return results[-1] if results else None


def request_latencies(progress: Sequence[Mapping[str, Any]], end_t: float) -> Dict[str, Optional[float]]:
    """p50/p99 of the loop's per-chunk latencies (workload.py's lat_ms) within the window."""
    latencies = [
        float(event["lat_ms"])
        for event in progress
        if event.get("event") == "scan" and "lat_ms" in event and event["arrived"] <= end_t
    ]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "lat_p50_ms": None if p50 is None else round(p50, 2),
        "lat_p99_ms": None if p99 is None else round(p99, 2),
    }


def clean_cache_share(sample: Mapping[str, Any]) -> Optional[float]:
    """Clean page cache as a share of memory.current: the LRU file pages (shmem is on the anon
    LRU) minus dirty and writeback pages; what reclaim can take without writeback or swap."""
    stat = sample.get("stat", {})
    parts = [stat.get(key) for key in ("active_file", "inactive_file", "file_dirty", "file_writeback")]
    if any(part is None for part in parts) or not sample.get("current"):
        return None
    active, inactive, dirty, writeback = (int(part or 0) for part in parts)
    return round(max(0, active + inactive - dirty - writeback) / int(sample["current"]), 3)


def summarize(run: Mapping[str, Any]) -> Dict[str, Any]:
    samples: Sequence[Mapping[str, Any]] = run.get("samples", [])
    if len(samples) < 2:
        return {"error": "fewer than two samples"}
    first, last = samples[0], samples[-1]
    duration = last["t"] - first["t"]
    second_half = [s["full_avg10"] for s in samples if s["t"] >= first["t"] + duration / 2]
    peak = max(samples, key=lambda s: s["current"])
    scanned = scanned_mib_by(run.get("progress", []), last["t"])
    metrics: Dict[str, Any] = {
        "window_sec": round(duration, 2),
        "full_stall_pct": round(stall_percent(first, last, "full_total_us"), 2),
        "some_stall_pct": round(stall_percent(first, last, "some_total_us"), 2),
        "full_avg10_peak": max(s["full_avg10"] for s in samples),
        "full_avg10_mean_second_half": round(statistics.fmean(second_half), 2) if second_half else 0.0,
        "mib_scanned": round(scanned, 1),
        "throughput_mib_s": round(scanned / duration, 2) if duration > 0 else 0.0,
        "oom_kills": last["events"]["oom_kill"] - first["events"]["oom_kill"],
        "oom_kill_at_sec": oom_kill_times(samples),
        "peak_current": peak["current"],
        "peak_at_sec": peak["t"],
        "stat_at_peak": dict(peak["stat"]),
        "events_high_delta": last["events"]["high"] - first["events"]["high"],
        "events_max_delta": last["events"]["max"] - first["events"]["max"],
        "full_stall_by_interval": _interval_stall(samples, "full_total_us"),
    }
    # Where the pressure was: clean cache share at the first sample with full stall, else at the peak.
    stalled = next(
        (
            after
            for before, after in zip(samples, samples[1:])
            if after["full_total_us"] > before["full_total_us"]
        ),
        peak,
    )
    metrics["clean_cache_share_at_pressure"] = clean_cache_share(stalled)
    metrics["memory_high_end"] = last.get("high")
    metrics.update(request_latencies(run.get("progress", []), last["t"]))
    result = tool_result(run.get("progress", []))
    if result is not None:
        # The tool's own summary: its latency percentiles are the scenario's. Throughput stays
        # what its per-second status lines showed within the window (the stall's window): under
        # emulation the tool starts seconds late and its own runtime is not the window.
        metrics["tool_result"] = dict(result)
        metrics["lat_p50_ms"] = result.get("lat_p50_ms")
        metrics["lat_p99_ms"] = result.get("lat_p99_ms")
        if scanned <= 0:
            metrics["throughput_mib_s"] = result.get("throughput", 0.0)
    services = run.get("services")
    if services:
        # The noisy neighbour: the latency-sensitive service's figures are the scenario's;
        # the batch job's throughput is reported beside them.
        metrics["services"] = {name: service.get("metrics", {}) for name, service in services.items()}
        sensitive: Mapping[str, Any] = next(
            (m for name, m in metrics["services"].items() if name.startswith("sensitive")), {}
        )
        batch: Mapping[str, Any] = next(
            (m for name, m in metrics["services"].items() if name.startswith("batch")), {}
        )
        for key in ("throughput_mib_s", "mib_scanned", "lat_p50_ms", "lat_p99_ms"):
            metrics[key] = sensitive.get(key)
        metrics["batch_throughput_mib_s"] = batch.get("throughput_mib_s")
        metrics["sensitive_full_stall_pct"] = sensitive.get("full_stall_pct")
        metrics["batch_full_stall_pct"] = batch.get("full_stall_pct")
    exits = [] if run.get("restart_on_oom_kill") else run.get("workload_exits", [])
    metrics["alive_sec"], metrics["full_stall_pct_alive"] = stall_while_alive(samples, exits)
    if "senpai" in run:
        metrics["senpai"] = run["senpai"]
    if "records" in run:
        metrics["remediator"] = summarize_records(run["records"])
        metrics["remediator"]["cpu_sec"] = run.get("daemon_cpu_sec")
    return metrics
