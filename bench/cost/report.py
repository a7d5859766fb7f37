"""From the guest reports to the results: statistics, ratios, targets met or missed, the
Markdown table and the plot. Pure functions of the raw reports, so a committed results
JSON can be re-rendered (``python -m bench.cost.report results.json``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

Json = Dict[str, Any]

TARGET_IDLE_CPU_RATIO = 0.1
TARGET_WAKEUPS_PER_SEC = 1.0
TARGET_REACTION_EXCESS_SEC = 0.050
TARGET_RSS_RATIO = 1.5
# "Grows at most linearly": the largest N may exceed the straight line through the two N below
# it by at most this factor (emulated start-ups vary by tens of percent next to other VMs).
LINEARITY_TOLERANCE = 1.5
IDLE_CPU_N = 1000
REACTION_NS = (1, 1000)  # the reaction series: a missing one is reported, not skipped
RSS_SMALL_N, RSS_LARGE_N = 10, 1000
# Issue 11: stop (SIGTERM -> exit) at N = 2000 within 5 s, every restore done before the exit.
TARGET_STOP_SEC = 5.0
STOP_N = 2000

# Why a target was missed and what would fix it: the analysis of the committed run.
# Shown in the Markdown next to a missed target; keyed like ``targets``.
TARGET_NOTES: Dict[str, str] = {
    "idle_cpu_at_1000": (
        "the daemon's only idle work is the rescan every rescan_interval_sec (walk of the tree, "
        "matching, comparing with the watched set); before the walk stopped listing leaf cgroups "
        "it was 0.22 of the baseline. Next: skip the rescan's matching when no directory's link "
        "count changed, or watch the selected parents with inotify."
    ),
    "idle_wakeups": "each rescan is one wake-up; a wake-up rate above 1/s means something polls.",
    "reaction_p99_at_1": (
        "judged on emulated time. From the kernel's event to the write the daemon takes about 30 ms at "
        "p50 under TCG, all Python: reading 9 interface files, the decision, the executor's re-read, "
        "two write-ahead saves of the state file with fsync, the write. Earlier runs' p99 was an event "
        "acted on one trigger window (2.08 s) late, right after the previous episode's rollback: the "
        "daemon's records (kept with each event since) showed why. After an idle spell the kernel "
        "counts stall from its trigger's stale window start, so the tail of the previous episode "
        "raised the event while the new stall was only starting; the daemon found too little new "
        "stall, and the kernel's next event came a window later. The daemon now looks again a quarter "
        "window after an unconfirmed event (cost-reaction-n1-2026-11-26: no late event in 30). What "
        "is left is the Python path under emulation (10-30x slower than a real CPU): judge the 50 ms "
        "on real hardware (KVM or bare metal)."
    ),
    "reaction_p99_at_1000": (
        "as at N = 1: the same path (N adds only the poll() over N fds); see the N = 1 note."
    ),
    "rss_1000_vs_10": "the per-target state (the last snapshot kept for records on exit) dominates.",
    "startup_linear": (
        "start-up is Python's imports (10-25 s under TCG, noisy with other VMs) plus, per cgroup, "
        "arming a trigger (the kernel creates a psimon thread for it on 6.1), reading a baseline "
        "snapshot and one decision; the decision copied the whole state per target (quadratic) "
        "until the core's copy stopped re-hashing keys."
    ),
    "pickup_linear": "pick-up is the rescan interval plus one rescan; see pickup_bound.",
    f"stop_at_{STOP_N}": (
        "closing a PSI trigger fd waits for an RCU grace period in the kernel (psi_trigger_destroy, "
        "6.1), and a cgroup's last trigger for its psimon thread to stop; the watcher closes them from "
        "several threads (Watcher.close). See the close cost by thread count in the Stop section."
    ),
    "pickup_bound_at_2000": (
        "the bound (rescan_interval_sec) leaves out the arming of what appeared: a cgroup created just "
        "after a rescan passed is found by the next walk, then armed (on 6.1 each trigger creates a "
        "psimon kernel thread) and baselined with every other cgroup that appeared. The first run "
        "measured 11.6 s. Since then the next walk starts early by the previous rescan's duration "
        "(10.6 s), and a burst's WATCH_STARTED records come once its triggers are armed, before the "
        "baseline reads (10.3 s): what is left is arming 100 triggers at once under emulation. Next: "
        "start the walk earlier by an allowance for arming, measured per trigger, or arm a large burst "
        "from a worker so that the walk's own bound holds."
    ),
}


# ---- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> Optional[float]:
    """Nearest-rank percentile (with 30 samples p99 is the maximum: no interpolation invents data)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> Json:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def _difference(event: Json, later: str, earlier: str) -> Optional[float]:
    a, b = event.get(later), event.get(earlier)
    if a is None or b is None:
        return None
    return float(a) - float(b)


REACTION_SPANS: Tuple[Tuple[str, str, str], ...] = (
    ("event_to_woken", "woken", "kernel_event"),
    ("woken_to_decided", "decided", "woken"),
    ("event_to_decided", "decided", "kernel_event"),
    ("decided_to_written", "written", "decided"),
    ("event_to_written", "written", "kernel_event"),
    ("event_to_record", "record_arrived", "kernel_event"),
)


def reaction_summary(series: Json) -> Json:
    events = [e for e in series.get("events", []) if "error" not in e and e.get("kernel_event") is not None]
    spans: Json = {}
    for name, later, earlier in REACTION_SPANS:
        values = [d for d in (_difference(e, later, earlier) for e in events) if d is not None]
        if values:
            spans[name] = distribution(values)
    writes = [float(e["kernel_write_sec"]) for e in events if e.get("kernel_write_sec") is not None]
    spans["kernel_write"] = distribution(writes)
    # The target: the kernel's event to the action written, less the write itself.
    excess = [
        float(e["written"]) - float(e["kernel_event"]) - float(e.get("kernel_write_sec") or 0.0)
        for e in events
        if e.get("written") is not None
    ]
    spans["event_to_written_less_kernel_write"] = distribution(excess)
    return {
        "n": series.get("n"),
        "mode": series.get("mode"),
        "events": len(series.get("events", [])),
        "usable_events": len(events),
        "failed_events": [e for e in series.get("events", []) if "error" in e],
        "witness_realtime": series.get("witness_realtime"),
        "spans_sec": spans,
    }


# ---- scale -----------------------------------------------------------------------------------


def _per_sec(idle: Json, key: str) -> Optional[float]:
    seconds = idle.get("seconds") or 0.0
    return idle[key] / seconds if seconds > 0 and key in idle else None


def scale_row(scale: Json) -> Json:
    rem, sub, base = scale["remediator"], scale["remediator_sub2s"], scale["baseline"]
    rem_idle, base_idle = rem.get("idle", {}), base.get("idle", {})
    row: Json = {
        "n": scale["n"],
        "remediator": {
            "ready_sec": rem["ready_sec"],
            "ready_sec_sub2s": sub["ready_sec"],
            # Two start-ups doing the same work (only the window differs): the faster one is the
            # daemon's cost, the slower one also carries the other VMs sharing the host's 2 cores.
            "ready_sec_best": min(rem["ready_sec"], sub["ready_sec"]),
            "rss_kib": rem_idle.get("rss_kib"),
            "peak_rss_kib": rem_idle.get("peak_rss_kib"),
            "idle_cpu_share": _per_sec(rem_idle, "cpu_sec"),
            "idle_wakeups_per_sec": _per_sec(rem_idle, "voluntary_switches"),
            "idle_system_busy_share": _per_sec(rem_idle, "system_busy_sec"),
            "pickup_all_sec": rem.get("pickup", {}).get("all_sec"),
            "pickup_first_sec": rem.get("pickup", {}).get("first_sec"),
            "pickup_complete": rem.get("pickup", {}).get("complete"),
            "psimon_threads_2s": rem["psimon_threads"],
            "psimon_threads_sub2s": sub["psimon_threads"],
            "stop_sec": rem["stop_sec"],
            "stop_sec_sub2s": sub["stop_sec"],
            "watched_at_ready": rem["watched_at_ready"],
        },
        "baseline": {
            "ready_sec": base["ready_sec"],
            "rss_kib": base_idle.get("rss_kib"),
            "peak_rss_kib": base_idle.get("peak_rss_kib"),
            "idle_cpu_share": _per_sec(base_idle, "cpu_sec"),
            "idle_wakeups_per_sec": _per_sec(base_idle, "voluntary_switches"),
            "idle_system_busy_share": _per_sec(base_idle, "system_busy_sec"),
            "pickup_all_sec": base.get("pickup", {}).get("all_sec"),
        },
    }
    row["ratios"] = {
        key: _ratio(row["remediator"][key], row["baseline"][key])
        for key in ("idle_cpu_share", "idle_wakeups_per_sec", "rss_kib", "ready_sec", "pickup_all_sec")
    }
    return row


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def linear_fit(points: Sequence[Tuple[float, float]]) -> Optional[Tuple[float, float]]:
    """Least squares (slope, intercept); None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x


def superlinearity(points: Sequence[Tuple[float, float]]) -> Optional[float]:
    """The largest N's value over the straight line through the two N below it, extended to
    the largest N: 1 on a line, above 1 when the curve bends upwards. (Two neighbours, not the
    smallest N: at small N the fixed cost, Python's imports, is all there is, and its noise.)"""
    pts = sorted(points)
    if len(pts) < 3:
        return None
    (xa, ya), (xb, yb), (xl, yl) = pts[-3], pts[-2], pts[-1]
    if xb == xa:
        return None
    line = yb + (yb - ya) / (xb - xa) * (xl - xb)
    # A line through two noisy points can point down; growth is then judged against no growth.
    return yl / max(line, yb) if max(line, yb) > 0 else None


# ---- targets ---------------------------------------------------------------------------------


def _target(name: str, met: Optional[bool], measured: str, target: str) -> Json:
    status = "not measured" if met is None else ("met" if met else "missed")
    out = {"name": name, "status": status, "measured": measured, "target": target}
    if status == "missed" and name in TARGET_NOTES:
        out["note"] = TARGET_NOTES[name]
    return out


def _fmt(value: Optional[float], spec: str = ".3g", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def evaluate_targets(rows: List[Json], reactions: List[Json], rescan_interval_sec: float) -> List[Json]:
    by_n = {row["n"]: row for row in rows}
    targets: List[Json] = []
    row = by_n.get(IDLE_CPU_N)
    ratio = row["ratios"]["idle_cpu_share"] if row else None
    targets.append(
        _target(
            "idle_cpu_at_1000",
            None if ratio is None else ratio <= TARGET_IDLE_CPU_RATIO,
            f"remediator / baseline idle CPU at N = {IDLE_CPU_N}: {_fmt(ratio)}",
            f"<= {TARGET_IDLE_CPU_RATIO:g}",
        )
    )
    wake = [(r["n"], r["remediator"]["idle_wakeups_per_sec"]) for r in rows]
    worst = max((w for _, w in wake if w is not None), default=None)
    targets.append(
        _target(
            "idle_wakeups",
            None if worst is None else worst <= TARGET_WAKEUPS_PER_SEC,
            "idle wake-ups/s by N: " + ", ".join(f"{n}: {_fmt(w, '.2f')}" for n, w in wake),
            f"<= {TARGET_WAKEUPS_PER_SEC:g}/s at every N",
        )
    )
    for reaction in (r for r in reactions if r["mode"] == "remediator"):
        p99 = reaction["spans_sec"].get("event_to_written_less_kernel_write", {}).get("p99")
        targets.append(
            _target(
                f"reaction_p99_at_{reaction['n']}",
                None if p99 is None else p99 <= TARGET_REACTION_EXCESS_SEC,
                f"p99 kernel event -> written, less the kernel's write, at N = {reaction['n']}: "
                f"{_fmt(None if p99 is None else p99 * 1000, '.1f', ' ms')} "
                f"({reaction['usable_events']} events)",
                f"<= {TARGET_REACTION_EXCESS_SEC * 1000:g} ms",
            )
        )
    measured_ns = {r["n"] for r in reactions if r["mode"] == "remediator"}
    for n in (n for n in REACTION_NS if n not in measured_ns):
        targets.append(
            _target(
                f"reaction_p99_at_{n}",
                None,
                f"no completed remediator reaction series at N = {n}",
                f"<= {TARGET_REACTION_EXCESS_SEC * 1000:g} ms",
            )
        )
    small, large = by_n.get(RSS_SMALL_N), by_n.get(RSS_LARGE_N)
    rss_ratio = (
        _ratio(large["remediator"]["rss_kib"], small["remediator"]["rss_kib"]) if small and large else None
    )
    fit = linear_fit(
        [(r["n"], r["remediator"]["rss_kib"] * 1024.0) for r in rows if r["remediator"]["rss_kib"]]
    )
    per_cgroup = f"; {fit[0]:.0f} bytes per watched cgroup (least squares over N)" if fit else ""
    targets.append(
        _target(
            "rss_1000_vs_10",
            None if rss_ratio is None else rss_ratio <= TARGET_RSS_RATIO,
            f"RSS at {RSS_LARGE_N} / RSS at {RSS_SMALL_N}: {_fmt(rss_ratio)}{per_cgroup}",
            f"<= {TARGET_RSS_RATIO:g}",
        )
    )
    for key, label in (("ready_sec_best", "startup_linear"), ("pickup_all_sec", "pickup_linear")):
        points = [(float(r["n"]), r["remediator"][key]) for r in rows if r["remediator"][key] is not None]
        bend = superlinearity(points)
        targets.append(
            _target(
                label,
                None if bend is None else bend <= LINEARITY_TOLERANCE,
                f"{key} by N: "
                + ", ".join(f"{int(n)}: {v:.1f} s" for n, v in points)
                + f"; largest N over the line through the two N below it: {_fmt(bend)}",
                f"<= {LINEARITY_TOLERANCE:g} (straight line = 1)",
            )
        )
    largest = max(by_n) if by_n else None
    pickup = by_n[largest]["remediator"]["pickup_all_sec"] if largest is not None else None
    complete = by_n[largest]["remediator"]["pickup_complete"] if largest is not None else None
    targets.append(
        _target(
            f"pickup_bound_at_{largest}",
            None if pickup is None else bool(complete) and pickup <= rescan_interval_sec,
            f"100 cgroups created just after a rescan, all watched after {_fmt(pickup, '.1f', ' s')} "
            f"at N = {largest}",
            f"<= rescan_interval_sec = {rescan_interval_sec:g} s (README: the longest a new cgroup waits)",
        )
    )
    return targets


# ---- stop ------------------------------------------------------------------------------------


def stop_row(stop: Json) -> Json:
    daemon = stop["daemon"]
    return {
        "n": stop["n"],
        "ready_sec": daemon.get("ready_sec"),
        "watched_at_ready": daemon.get("watched_at_ready"),
        "clamped": daemon.get("clamped"),
        "stop_sec": daemon.get("stop_sec"),
        "exit_code": daemon.get("exit_code"),
        "restores_after_sigterm": daemon.get("restores_after_sigterm"),
        "restore_results": daemon.get("restore_results", []),
        "memory_high_before_stop": daemon.get("memory_high_before_stop"),
        "memory_high_after_exit": daemon.get("memory_high_after_exit"),
        "stopping_record_sec": daemon.get("stopping_record_sec"),
        "psimon_threads": daemon.get("psimon_threads"),
        "psimon_threads_after_exit": daemon.get("psimon_threads_after_exit"),
        "close_cost": stop.get("close_cost", []),
    }


def restores_done(row: Json) -> bool:
    """The clamp made before SIGTERM was given back by the daemon before it exited."""
    results = row["restore_results"]
    return (
        bool(row["clamped"])
        and row["exit_code"] == 0
        and row["memory_high_after_exit"] == "max"
        and len(results) >= 1
        and all(r == "restored" for r in results)
    )


def stop_target(stops: List[Json]) -> Json:
    row = next((r for r in stops if r["n"] == STOP_N), None)
    stop_sec = row["stop_sec"] if row else None
    measured = (
        f"SIGTERM -> exit at N = {STOP_N}: {_fmt(stop_sec, '.1f', ' s')}, "
        f"{row['restores_after_sigterm']} restore(s) after SIGTERM, memory.high after exit "
        f"{row['memory_high_after_exit']}"
        if row
        else f"no stop series at N = {STOP_N}"
    )
    met = None if row is None or stop_sec is None else stop_sec <= TARGET_STOP_SEC and restores_done(row)
    return _target(
        f"stop_at_{STOP_N}", met, measured, f"<= {TARGET_STOP_SEC:g} s, every restore done before exit"
    )


# ---- assembling ------------------------------------------------------------------------------


def summarize(
    raw: Sequence[Json], facts: Json, rescan_interval_sec: float = 10.0, core: Optional[Json] = None
) -> Json:
    rows = [scale_row(doc["scale"]) for doc in raw if "scale" in doc]
    rows.sort(key=lambda r: r["n"])
    reactions: List[Json] = []
    for doc in raw:
        for series in doc.get("reaction", {}).values():
            reactions.append(reaction_summary(series))
    stops = sorted((stop_row(doc["stop"]) for doc in raw if "stop" in doc), key=lambda r: r["n"])
    targets = evaluate_targets(rows, reactions, rescan_interval_sec)
    if stops:
        targets.append(stop_target(stops))
    guest: Json = next((doc["machine"] for doc in raw if "machine" in doc), {})
    return {
        "schema": "remediator.bench.cost/v1",
        "facts": {**facts, "guest": guest, "rescan_interval_sec": rescan_interval_sec},
        "scale": rows,
        "reaction": reactions,
        "stop": stops,
        "targets": targets,
        "core": core or {},
        "errors": [
            {"label": doc.get("label"), "error": doc["error"][-2000:]} for doc in raw if "error" in doc
        ],
        "raw": list(raw),
    }


# ---- Markdown --------------------------------------------------------------------------------


def _ms(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f}"


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def _mib(kib: Optional[float]) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def render_markdown(results: Json) -> str:
    facts = results["facts"]
    guest: Json = facts.get("guest", {})
    quick = " (quick)" if facts.get("quick") else ""
    lines = [
        f"# remediator cost and reaction benchmark, {facts.get('date', '')}{quick}",
        "",
        f"Commit `{facts.get('commit', '')}`, started {facts.get('started_utc', '')}. "
        f"Host: {facts.get('host_cpu_model', '')}, {facts.get('host_cpus', '')} CPUs, "
        f"Linux {facts.get('host_kernel', '')}. "
        f"Guest: Linux {guest.get('kernel', '')} ({guest.get('kernel_version', '')}), "
        f"{guest.get('cpus', '')} vCPUs ({guest.get('cpu_model', '')}), Python {guest.get('python', '')}. "
        f"Emulation: {facts.get('emulation', '')}; {facts.get('qemu', '')}. "
        "Absolute times are those of software emulation (roughly 10-30x slower than native); "
        "ratios are the result.",
        "",
        f"Idle window {facts.get('idle_sec', 0):g} s, {facts.get('events', 0)} pressure events per "
        f"reaction series, rescan_interval_sec {facts.get('rescan_interval_sec', 0):g} s. Policies select "
        "every cgroup; 2 s windows (100 ms full stall per 2 s) unless marked sub-2 s (50 ms per 1 s).",
        "",
    ]
    if facts.get("assembled"):
        lines += [f"Assembled: {facts['assembled']}", ""]
    lines += [
        "## Targets",
        "",
    ]
    lines += _table(
        ["target", "status", "measured", "target value"],
        [[t["name"], f"**{t['status']}**", t["measured"], t["target"]] for t in results["targets"]],
    )
    notes = [t for t in results["targets"] if t.get("note")]
    if notes:
        lines += ["", "Why missed, and what would fix it:", ""]
        lines += [f"- `{t['name']}`: {t['note']}" for t in notes]
    lines += ["", "## Scale: remediator (2 s windows unless noted)", ""]
    lines += _table(
        ["N", "start to READY=1 (s)", "sub-2 s (s)", "RSS (MiB)", "VmHWM (MiB)", "idle CPU",
         "idle wake-ups/s",
         "machine busy", "100 new watched (s)", "psimon 2 s", "psimon sub-2 s", "stop (s)"],
        [
            [
                str(r["n"]), f"{m['ready_sec']:.1f}", f"{m['ready_sec_sub2s']:.1f}", _mib(m["rss_kib"]),
                _mib(m["peak_rss_kib"]), _pct(m["idle_cpu_share"]), _fmt(m["idle_wakeups_per_sec"], ".2f"),
                _pct(m["idle_system_busy_share"]), _fmt(m["pickup_all_sec"], ".1f"),
                str(m["psimon_threads_2s"]),
                str(m["psimon_threads_sub2s"]), f"{m['stop_sec']:.1f}",
            ]
            for r in results["scale"]
            for m in [r["remediator"]]
        ],
    )  # fmt: skip
    lines += ["", "## Scale: 1 s polling baseline, and remediator / baseline", ""]
    lines += _table(
        ["N", "first pass (s)", "RSS (MiB)", "idle CPU", "idle wake-ups/s", "machine busy",
         "100 new seen (s)",
         "CPU ratio", "wake-up ratio", "RSS ratio"],
        [
            [
                str(r["n"]), f"{b['ready_sec']:.1f}", _mib(b["rss_kib"]), _pct(b["idle_cpu_share"]),
                _fmt(b["idle_wakeups_per_sec"], ".2f"), _pct(b["idle_system_busy_share"]),
                _fmt(b["pickup_all_sec"], ".1f"), _fmt(q["idle_cpu_share"]), _fmt(q["idle_wakeups_per_sec"]),
                _fmt(q["rss_kib"]),
            ]
            for r in results["scale"]
            for b, q in [(r["baseline"], r["ratios"])]
        ],
    )  # fmt: skip
    lines += ["", "## Reaction (ms; p50 / p95 / p99 / max)", ""]
    rows = []
    for reaction in results["reaction"]:
        for span, dist in reaction["spans_sec"].items():
            if not dist.get("count"):
                continue
            rows.append(
                [
                    reaction["mode"], str(reaction["n"]), span,
                    " / ".join(_ms(dist[k]) for k in ("p50", "p95", "p99", "max")), str(dist["count"]),
                ]
            )  # fmt: skip
    lines += _table(["who", "N", "span", "p50 / p95 / p99 / max", "events"], rows)
    lines += [
        "",
        "Spans: `event` is the kernel's trigger event (a SCHED_FIFO witness with the same trigger on the "
        "same "
        "cgroup); `woken`, `decided`, `written` are the daemon's REMEDIATOR_*_MONOTONIC_US fields (for the "
        "baseline, `decided` is the tick that noticed the pressure); `record` is when the record reached the "
        "reader of the daemon's stderr; `kernel_write` is the bench's own write of the same memory.high "
        "value "
        "right after the daemon's.",
    ]
    lines += _stop_markdown(results.get("stop", []))
    core = results.get("core", {})
    if core.get("benchmarks"):
        lines += [
            "",
            f"## Decision core on the host ({core.get('machine', '')}, {core.get('rounds')} rounds)",
            "",
        ]
        lines += _table(
            ["benchmark", "cgroups", "decisions/s", "mean round (ms)"],
            [
                [b["name"].split("[")[0].replace("test_bench_core_", ""), str(b["cgroups"]),
                 _fmt(b["decisions_per_sec"], ",.0f"), f"{b['mean_round_sec'] * 1000:.2f}"]
                for b in core["benchmarks"]
            ],
        )  # fmt: skip
    if results.get("errors"):
        lines += ["", "## Series that failed", ""]
        lines += [f"- {e['label']}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


def _stop_markdown(stops: Sequence[Json]) -> List[str]:
    if not stops:
        return []
    lines = [
        "",
        "## Stop (SIGTERM -> process exit, with a clamp to restore)",
        "",
        "`bench.cost.stop`: N cgroups watched (2 s windows), one of them clamped by the daemon "
        "(memory.high) just before SIGTERM; timed from outside (SIGTERM sent -> waitpid returned). "
        "Restores: the daemon's ROLLED_BACK records after SIGTERM; memory.high is read after the exit.",
        "",
    ]
    lines += _table(
        ["N", "start to READY=1 (s)", "stop (s)", "restores after SIGTERM",
         "memory.high before -> after exit", "DAEMON_STOPPING at (s)", "exit code",
         "psimon armed -> after exit"],
        [
            [
                str(r["n"]), _fmt(r["ready_sec"], ".1f"), _fmt(r["stop_sec"], ".2f"),
                f"{r['restores_after_sigterm']} ({', '.join(str(x) for x in r['restore_results']) or '-'})",
                f"{r['memory_high_before_stop']} -> {r['memory_high_after_exit']}",
                _fmt(r["stopping_record_sec"], ".2f"), str(r["exit_code"]),
                f"{r['psimon_threads']} -> {r['psimon_threads_after_exit']}",
            ]
            for r in stops
        ],
    )  # fmt: skip
    costs = [(r["n"], c) for r in stops for c in r["close_cost"]]
    if costs:
        lines += [
            "",
            "Closing N armed triggers from P plain threads (no daemon): the kernel's share of the stop.",
            "",
        ]
        lines += _table(
            ["N", "threads", "fds", "arm (s)", "close (s)", "close per fd (ms)", "psimon armed -> after"],
            [
                [
                    str(n), str(c["threads"]), str(c["fds"]), f"{c['arm_sec']:.1f}", f"{c['close_sec']:.2f}",
                    f"{c['close_sec'] / c['fds'] * 1000:.2f}" if c["fds"] else "n/a",
                    f"{c['psimon_armed']} -> {c['psimon_after_close']}",
                ]
                for n, c in costs
            ],
        )  # fmt: skip
    return lines


# ---- plot ------------------------------------------------------------------------------------


def _series(rows: Sequence[Json], who: str, key: str, scale: float = 1.0) -> Tuple[List[int], List[float]]:
    pts = [(r["n"], r[who][key]) for r in rows if r[who].get(key) is not None]
    return [n for n, _ in pts], [v * scale for _, v in pts]


def plot_png(results: Json, path: Path) -> bool:
    """Panels against N: the scale series' four, the stop series' two. Needs matplotlib; False
    (no file) without it or without anything to plot."""
    rows, stops = results["scale"], results.get("stop", [])
    if importlib.util.find_spec("matplotlib") is None or not (rows or stops):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = (4 if rows else 0) + (2 if stops else 0)
    fig, grid = plt.subplots(count // 2, 2, figsize=(11, 4 * (count // 2)), squeeze=False)
    axes = [ax for pair in grid for ax in pair]
    if rows:
        _plot_scale(axes[:4], rows)
    if stops:
        _plot_stop(axes[-2:], stops)
    facts = results["facts"]
    fig.suptitle(
        f"remediator{' vs 1 s polling' if rows else ' stop'}, {facts.get('date', '')}, "
        f"Linux {facts.get('guest', {}).get('kernel', '')} "
        "under qemu TCG"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _plot_scale(axes: Sequence[Any], rows: Sequence[Json]) -> None:
    panels: List[Tuple[Any, str, str, float, bool]] = [
        (axes[0], "idle_cpu_share", "idle CPU (% of one CPU)", 100.0, True),
        (axes[1], "idle_wakeups_per_sec", "idle wake-ups per second", 1.0, True),
        (axes[2], "rss_kib", "RSS (MiB)", 1 / 1024, False),
        (axes[3], "ready_sec_best", "start-up to READY=1 / first pass (s)", 1.0, False),
    ]
    for ax, key, title, factor, log in panels:
        for who, style in (("remediator", "o-"), ("baseline", "s--")):
            # The baseline has one start-up: its ready_sec.
            field = "ready_sec" if who == "baseline" and key == "ready_sec_best" else key
            xs, ys = _series(rows, who, field, factor)
            if xs:
                ax.plot(xs, ys, style, label=who)
        if key == "ready_sec_best":
            xs, ys = _series(rows, "remediator", "pickup_all_sec")
            ax.plot(xs, ys, "^:", label="remediator: 100 new cgroups watched")
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("watched cgroups (N)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def _plot_stop(axes: Sequence[Any], stops: Sequence[Json]) -> None:
    ax = axes[0]
    pts = [(r["n"], r["stop_sec"]) for r in stops if r["stop_sec"] is not None]
    ax.plot([n for n, _ in pts], [v for _, v in pts], "o-", label="SIGTERM -> exit, one restore")
    ax.axhline(TARGET_STOP_SEC, color="grey", linestyle="--", label=f"target at N = {STOP_N}")
    ax.set_xscale("log")
    ax.set_xlabel("watched cgroups (N)")
    ax.set_title("stop time (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    if not any(row["close_cost"] for row in stops):
        ax.set_visible(False)
        return
    for row in stops:
        costs = sorted((c["threads"], c["close_sec"]) for c in row["close_cost"])
        if costs:
            ax.plot([t for t, _ in costs], [v for _, v in costs], "o-", label=f"{row['n']} trigger fds")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("closing threads")
    ax.set_title("closing N armed triggers, no daemon (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _plot_elsewhere(results_json: Path, png: Path) -> bool:
    """The system Python may have matplotlib when the venv does not (python3-matplotlib)."""
    python = shutil.which("python3")
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        return False
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [python, "-m", "bench.cost.report", "--plot-only", str(results_json), str(png)],
        cwd=repo, check=False, capture_output=True,
    )  # fmt: skip
    return done.returncode == 0 and png.exists()


def write_all(results: Json, out_dir: Path, stem: str) -> List[Path]:
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    md_path = out_dir / f"{stem}.md"
    written = [json_path]
    png = out_dir / f"{stem}.png"
    if plot_png(results, png) or _plot_elsewhere(json_path, png):
        written.append(png)
    markdown = render_markdown(results)
    if png in written:
        markdown += f"\n![the series against N]({png.name})\n"
    md_path.write_text(markdown)
    written.insert(1, md_path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if args and args[0] == "--plot-only":
        return 0 if plot_png(json.loads(Path(args[1]).read_text()), Path(args[2])) else 1
    source = Path(args[0])
    results = json.loads(source.read_text())
    # Re-evaluate with the current notes and targets, keeping the measurements.
    facts = {k: v for k, v in results["facts"].items() if k != "guest"}
    results = summarize(results["raw"], facts, core=results.get("core"))
    for path in write_all(results, source.parent, source.stem):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
