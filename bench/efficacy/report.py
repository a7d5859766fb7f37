"""From runs to results: per-series statistics, the issue's targets, a JSON file and a Markdown table.

Pure functions over the runs' JSON (``runner.run_one``), so committed results can
be re-summarized and the target logic is unit-tested on hand-made runs.

"Within noise" has to be defined to be checked. Here it is: two series differ
by more than noise when their medians differ by more than the largest of an
absolute floor, a relative floor (of the reference's median) and the sum of the
two series' half-ranges over their repeats. With one run per series (the quick
mode) the floors alone decide, so a quick run can only flag large differences.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bench.efficacy.scenarios import (
    ALL_SERIES,
    SERIES_TITLES,
    STATIC_GRID,
    WorkloadKind,
    scenario_named,
)
from remediator.records import RecordType

SCHEMA = "remediator.bench.efficacy/v1"
MIB = 1 << 20

# Noise floors: absolute (the metric's unit) and relative (share of the reference's median).
STALL_NOISE_ABS_PCT = 2.0
STALL_NOISE_REL = 0.25
THROUGHPUT_NOISE_ABS_MIB_S = 5.0
THROUGHPUT_NOISE_REL = 0.15
# p99 latency: 25 % of the reference's median or 5 ms, or the half-ranges (same rule).
LATENCY_NOISE_ABS_MS = 5.0
LATENCY_NOISE_REL = 0.25
# Issue 13: the full stall target of 1/2 applies where clean page cache is at least this share
# of memory.current at the pressure (measured in none's runs).
CLEAN_CACHE_SHARE_FOR_TARGET = 0.2
DEFAULT_STALL_FRACTION = 0.5
# PostgreSQL: p99 latency at least 30 % lower than none's.
PG_P99_FRACTION_OF_NONE = 0.7
STATIC_BEST = "static-best"

# The stall compared between series "within noise": the full stall share while the workload
# lived (the whole window unless it was OOM-killed; then a run killed later is not worse for
# having lived longer).
STALL_KEY = "full_stall_pct_alive"

# Metrics summarized per series (key in run["metrics"], or a derived one below).
NUMERIC_METRICS = (
    "full_stall_pct",
    "full_stall_pct_alive",
    "alive_sec",
    "some_stall_pct",
    "full_avg10_peak",
    "full_avg10_mean_second_half",
    "throughput_mib_s",
    "stall_sec_per_gib",
    "oom_kills",
    "peak_current",
    "events_high_delta",
    "events_max_delta",
    "remediator_cpu_sec",
    "lat_p50_ms",
    "lat_p99_ms",
    "clean_cache_share_at_pressure",
    "batch_throughput_mib_s",
    "sensitive_full_stall_pct",
    "batch_full_stall_pct",
    "senpai_cpu_sec",
    "senpai_adjustments",
)


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float
    values: Tuple[float, ...]

    @property
    def half_range(self) -> float:
        return (self.high - self.low) / 2

    def as_json(self) -> Dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "values": list(self.values)}


def stat_of(values: Iterable[float]) -> Optional[Stat]:
    kept = tuple(float(v) for v in values)
    if not kept:
        return None
    return Stat(statistics.median(kept), min(kept), max(kept), kept)


def derived_metric(run: Mapping[str, Any], key: str) -> Optional[float]:
    metrics = run.get("metrics", {})
    if key == "stall_sec_per_gib":
        # Stall per unit of work: less sensitive than the stall share to how fast
        # the (possibly shared, emulated) CPU happened to be during the run.
        scanned_gib = float(metrics.get("mib_scanned", 0.0)) / 1024
        if scanned_gib <= 0:
            return None
        stall_sec = float(metrics["full_stall_pct"]) / 100 * float(metrics["window_sec"])
        return round(stall_sec / scanned_gib, 3)
    if key in ("senpai_cpu_sec", "senpai_adjustments"):
        senpai = metrics.get("senpai") or run.get("senpai")
        value = None if senpai is None else senpai.get(key.split("_", 1)[1])
        return None if value is None else float(value)
    if key == "remediator_cpu_sec":
        remediator = metrics.get("remediator")
        cpu = None if remediator is None else remediator.get("cpu_sec")
        return None if cpu is None else float(cpu)
    value = metrics.get(key)
    return None if value is None else float(value)


def ok_runs(runs: Sequence[Mapping[str, Any]], scenario: str, series: str) -> List[Mapping[str, Any]]:
    return [
        run
        for run in runs
        if run.get("scenario") == scenario
        and run.get("series") == series
        and "error" not in run
        and "error" not in run.get("metrics", {"error": "none"})
    ]


def series_stats(runs: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"runs": len(runs)}
    for key in NUMERIC_METRICS:
        stat = stat_of(v for v in (derived_metric(run, key) for run in runs) if v is not None)
        if stat is not None:
            out[key] = stat.as_json()
    actions: Dict[str, Dict[str, Any]] = {}
    for run in runs:
        for kind, info in run.get("metrics", {}).get("remediator", {}).get("actions", {}).items():
            total = actions.setdefault(kind, {"count": 0, "bytes": 0, "values": []})
            total["count"] += info.get("count", 0)
            total["bytes"] += info.get("bytes", 0)
            total["values"].extend(info.get("values", []))
    if actions:
        out["actions_total"] = actions
    return out


def _stat(summary: Mapping[str, Any], series: str, key: str) -> Optional[Stat]:
    data = summary.get(series, {}).get(key)
    if data is None:
        return None
    return Stat(data["median"], data["min"], data["max"], tuple(data["values"]))


def noise_band(reference: Stat, other: Stat, absolute: float, relative: float) -> float:
    return max(absolute, relative * abs(reference.median), reference.half_range + other.half_range)


@dataclass(frozen=True)
class Target:
    scenario: str
    name: str
    met: Optional[bool]  # None: could not be judged (a series is missing)
    detail: str

    def as_json(self) -> Dict[str, Any]:
        return {"scenario": self.scenario, "target": self.name, "met": self.met, "detail": self.detail}


def _missing(scenario: str, name: str, *series: str) -> Target:
    return Target(scenario, name, None, f"not judged: no successful run of {', '.join(series)}")


def _fmt(value: float, unit: str) -> str:
    return f"{value:.2f}{unit}"


def _records(runs: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    return [record for run in runs for record in run.get("records", [])]


def _applied(records: Sequence[Mapping[str, Any]], action: str) -> List[Mapping[str, Any]]:
    applied = RecordType.ACTION_APPLIED.message_id
    return [
        r
        for r in records
        if r.get("MESSAGE_ID") == applied
        and r.get("REMEDIATOR_ACTION") == action
        and r.get("REMEDIATOR_RESULT") in ("applied", "partial")
    ]


def _declined(records: Sequence[Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool]) -> List[str]:
    declined = RecordType.ACTION_DECLINED.message_id
    messages: List[str] = []
    for record in records:
        if record.get("MESSAGE_ID") == declined and keep(record):
            message = str(record.get("MESSAGE", ""))
            if message not in messages:
                messages.append(message)
    return messages


def stall_at_most_fraction_of(
    scenario: str, summary: Mapping[str, Any], reference: str, fraction: float
) -> Target:
    name = f"remediator full stall <= 1/{round(1 / fraction)} of {reference}'s"
    ours = _stat(summary, "remediator", "full_stall_pct")
    theirs = _stat(summary, reference, "full_stall_pct")
    if ours is None or theirs is None:
        return _missing(scenario, name, "remediator", reference)
    limit = theirs.median * fraction
    met = ours.median <= limit
    detail = (
        f"median {_fmt(ours.median, ' %')} vs {reference} {_fmt(theirs.median, ' %')} "
        f"(limit {_fmt(limit, ' %')}; ratio {ours.median / theirs.median:.2f})"
        if theirs.median > 0
        else f"median {_fmt(ours.median, ' %')} vs {reference} 0 %"
    )
    return Target(scenario, name, met, detail)


def throughput_at_least(scenario: str, summary: Mapping[str, Any], series: str, fraction: float) -> Target:
    name = f"{series} throughput >= {fraction:.0%} of none's"
    ours = _stat(summary, series, "throughput_mib_s")
    none = _stat(summary, "none", "throughput_mib_s")
    if ours is None or none is None:
        return _missing(scenario, name, series, "none")
    ratio = ours.median / none.median if none.median > 0 else float("inf")
    return Target(
        scenario,
        name,
        ratio >= fraction,
        f"median {_fmt(ours.median, ' MiB/s')} vs none {_fmt(none.median, ' MiB/s')} ({ratio:.0%})",
    )


def no_oom_kills_where_none_has_none(scenario: str, summary: Mapping[str, Any]) -> Target:
    name = "zero OOM kills wherever none has zero"
    ours = _stat(summary, "remediator", "oom_kills")
    none = _stat(summary, "none", "oom_kills")
    if ours is None or none is None:
        return _missing(scenario, name, "remediator", "none")
    if none.high > 0:
        return Target(scenario, name, True, f"not applicable: none had OOM kills ({list(none.values)})")
    return Target(scenario, name, ours.high == 0, f"remediator OOM kills per run: {list(ours.values)}")


def not_worse_than_none(scenario: str, summary: Mapping[str, Any], series: str) -> Target:
    """Stall no higher and throughput no lower than none's, beyond noise."""
    name = f"{series} never worse than none (stall and throughput within noise)"
    stall, stall_none = _stat(summary, series, STALL_KEY), _stat(summary, "none", STALL_KEY)
    tput, tput_none = _stat(summary, series, "throughput_mib_s"), _stat(summary, "none", "throughput_mib_s")
    if stall is None or stall_none is None or tput is None or tput_none is None:
        return _missing(scenario, name, series, "none")
    stall_band = noise_band(stall_none, stall, STALL_NOISE_ABS_PCT, STALL_NOISE_REL)
    tput_band = noise_band(tput_none, tput, THROUGHPUT_NOISE_ABS_MIB_S, THROUGHPUT_NOISE_REL)
    stall_ok = stall.median <= stall_none.median + stall_band
    tput_ok = tput.median >= tput_none.median - tput_band
    return Target(
        scenario,
        name,
        stall_ok and tput_ok,
        f"stall {_fmt(stall.median, ' %')} vs {_fmt(stall_none.median, ' %')} "
        f"(noise {_fmt(stall_band, ' pp')}); "
        f"throughput {_fmt(tput.median, ' MiB/s')} vs {_fmt(tput_none.median, ' MiB/s')} "
        f"(noise {_fmt(tput_band, ' MiB/s')})",
    )


def within_noise_of_none(
    scenario: str, summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
) -> Target:
    """Dry-run: both directions within noise, and nothing written."""
    name = "dry-run within noise of none, and nothing changed"
    stall, stall_none = _stat(summary, "dry-run", STALL_KEY), _stat(summary, "none", STALL_KEY)
    tput, tput_none = (
        _stat(summary, "dry-run", "throughput_mib_s"),
        _stat(summary, "none", "throughput_mib_s"),
    )
    if stall is None or stall_none is None or tput is None or tput_none is None:
        return _missing(scenario, name, "dry-run", "none")
    stall_band = noise_band(stall_none, stall, STALL_NOISE_ABS_PCT, STALL_NOISE_REL)
    tput_band = noise_band(tput_none, tput, THROUGHPUT_NOISE_ABS_MIB_S, THROUGHPUT_NOISE_REL)
    stall_ok = abs(stall.median - stall_none.median) <= stall_band
    tput_ok = abs(tput.median - tput_none.median) <= tput_band
    dry_runs = ok_runs(runs, scenario, "dry-run")
    written = [
        r
        for r in _records(dry_runs)
        if r.get("REMEDIATOR_DRY_RUN") != "1"
        and r.get("REMEDIATOR_RESULT") in ("applied", "partial", "restored")
    ]
    high_changed = [
        run.get("memory_high_after_run") for run in dry_runs if run.get("memory_high_after_run") != "max"
    ]
    unchanged = not written and not high_changed
    return Target(
        scenario,
        name,
        stall_ok and tput_ok and unchanged,
        f"stall {_fmt(stall.median, ' %')} vs {_fmt(stall_none.median, ' %')} "
        f"(noise {_fmt(stall_band, ' pp')}); "
        f"throughput {_fmt(tput.median, ' MiB/s')} vs {_fmt(tput_none.median, ' MiB/s')} "
        f"(noise {_fmt(tput_band, ' MiB/s')}); "
        + (
            "no write recorded, memory.high left at max"
            if unchanged
            else f"CHANGED: {written[:1]} {high_changed}"
        ),
    )


def memory_high_not_lowered_with_reason(scenario: str, runs: Sequence[Mapping[str, Any]]) -> Target:
    name = "records say why memory.high was not lowered"
    remediator_runs = ok_runs(runs, scenario, "remediator")
    if not remediator_runs:
        return _missing(scenario, name, "remediator")
    records = _records(remediator_runs)
    lowered = _applied(records, "memory_high")
    reasons = _declined(
        records,
        lambda r: r.get("REMEDIATOR_ACTION") == "memory_high" or "condition" in str(r.get("MESSAGE", "")),
    )
    if lowered:
        return Target(scenario, name, False, f"memory.high WAS lowered: {lowered[0].get('MESSAGE')}")
    if reasons:
        return Target(scenario, name, True, f"not lowered; the record says: {reasons[0]}")
    escalated = RecordType.ESCALATED.message_id
    if not any(r.get("MESSAGE_ID") == escalated for r in records):
        # The ladder never got past reclaim: every pressure was answered by it and judged
        # calm after verify_sec, which the records show (reclaims, no escalation).
        return Target(
            scenario, name, True, "never considered: every pressure was answered by reclaim, none escalated"
        )
    return Target(scenario, name, False, "escalated past reclaim, but no record says why memory.high stayed")


def not_reclaimable_record(scenario: str, runs: Sequence[Mapping[str, Any]]) -> Target:
    name = "a record explains that the memory is not reclaimable"
    remediator_runs = ok_runs(runs, scenario, "remediator")
    if not remediator_runs:
        return _missing(scenario, name, "remediator")
    words = ("unreclaimable", "clean page cache", "cannot take")
    reasons = _declined(
        _records(remediator_runs), lambda r: any(w in str(r.get("MESSAGE", "")) for w in words)
    )
    if not reasons:
        return Target(scenario, name, False, "no declined record about unreclaimable memory")
    return Target(scenario, name, True, reasons[0])


def oom_kills_at_most_none(scenario: str, summary: Mapping[str, Any]) -> Target:
    name = "no more OOM kills than none"
    ours = _stat(summary, "remediator", "oom_kills")
    none = _stat(summary, "none", "oom_kills")
    if ours is None or none is None:
        return _missing(scenario, name, "remediator", "none")
    return Target(
        scenario,
        name,
        ours.median <= none.median and ours.high <= none.high,
        f"remediator {list(ours.values)} vs none {list(none.values)} per run",
    )


def stall_not_worse(scenario: str, summary: Mapping[str, Any]) -> Target:
    """Compared while the workload lived: one killed later would otherwise look worse for living."""
    name = "remediator stall no worse than none's while the workload lived (within noise)"
    ours = _stat(summary, "remediator", STALL_KEY)
    none = _stat(summary, "none", STALL_KEY)
    if ours is None or none is None:
        return _missing(scenario, name, "remediator", "none")
    band = noise_band(none, ours, STALL_NOISE_ABS_PCT, STALL_NOISE_REL)
    return Target(
        scenario,
        name,
        ours.median <= none.median + band,
        f"{_fmt(ours.median, ' %')} vs {_fmt(none.median, ' %')} (noise {_fmt(band, ' pp')})",
    )


def best_static(summary: Mapping[str, Any]) -> Optional[str]:
    """The best point of the static grid: the lowest median full stall among the points whose
    throughput is within noise of none's (a setting that throttles the workload is no cure);
    where none qualifies, the one with the highest throughput."""
    points = [name for name in STATIC_GRID if name in summary]
    if not points:
        return None
    none_tput = _stat(summary, "none", "throughput_mib_s")

    def keeps_up(name: str) -> bool:
        tput = _stat(summary, name, "throughput_mib_s")
        if none_tput is None or tput is None:
            return True
        band = noise_band(none_tput, tput, THROUGHPUT_NOISE_ABS_MIB_S, THROUGHPUT_NOISE_REL)
        return tput.median >= none_tput.median - band

    def stall(name: str) -> float:
        value = _stat(summary, name, "full_stall_pct")
        return float("inf") if value is None else value.median

    def throughput(name: str) -> float:
        value = _stat(summary, name, "throughput_mib_s")
        return 0.0 if value is None else value.median

    fair = [name for name in points if keeps_up(name)]
    if fair:
        return min(fair, key=stall)
    return max(points, key=throughput)


def no_harm(scenario: str, summary: Mapping[str, Any]) -> Target:
    """Issue 13: remediator's throughput and p99 latency never worse than none's beyond noise."""
    name = "do no harm: remediator throughput and p99 latency not worse than none's (within noise)"
    tput, tput_none = (
        _stat(summary, "remediator", "throughput_mib_s"),
        _stat(summary, "none", "throughput_mib_s"),
    )
    if tput is None or tput_none is None:
        return _missing(scenario, name, "remediator", "none")
    tput_band = noise_band(tput_none, tput, THROUGHPUT_NOISE_ABS_MIB_S, THROUGHPUT_NOISE_REL)
    met = tput.median >= tput_none.median - tput_band
    detail = (
        f"throughput {_fmt(tput.median, '')} vs {_fmt(tput_none.median, '')} (noise {_fmt(tput_band, '')})"
    )
    p99, p99_none = _stat(summary, "remediator", "lat_p99_ms"), _stat(summary, "none", "lat_p99_ms")
    if p99 is not None and p99_none is not None:
        p99_band = noise_band(p99_none, p99, LATENCY_NOISE_ABS_MS, LATENCY_NOISE_REL)
        met = met and p99.median <= p99_none.median + p99_band
        detail += (
            f"; p99 {_fmt(p99.median, ' ms')} vs {_fmt(p99_none.median, ' ms')} "
            f"(noise {_fmt(p99_band, ' ms')})"
        )
    return Target(scenario, name, met, detail)


def page_cache_stall_target(scenario: str, summary: Mapping[str, Any]) -> Target:
    """Full stall <= 1/4 of none's where the issue names it, else <= 1/2 where clean page cache
    is at least 20 % of usage at the pressure (none's runs say whether it is)."""
    fraction = scenario_named(scenario).stall_fraction_of_none
    if fraction is not None:
        return stall_at_most_fraction_of(scenario, summary, "none", fraction)
    share = _stat(summary, "none", "clean_cache_share_at_pressure")
    name = f"remediator full stall <= 1/{round(1 / DEFAULT_STALL_FRACTION)} of none's (clean cache >= 20 %)"
    if share is None:
        return _missing(scenario, name, "none")
    if share.median < CLEAN_CACHE_SHARE_FOR_TARGET:
        return Target(
            scenario,
            name,
            None,
            f"not applicable: clean page cache was {share.median:.0%} of usage at the pressure "
            "in none's runs",
        )
    target = stall_at_most_fraction_of(scenario, summary, "none", DEFAULT_STALL_FRACTION)
    return Target(
        scenario, name, target.met, f"{target.detail}; clean cache {share.median:.0%} at the pressure"
    )


def lower_stall_than(scenario: str, summary: Mapping[str, Any], other: str, label: str) -> Target:
    """At equal or better throughput (within noise), a lower median full stall than ``other``."""
    name = f"remediator: lower stall than {label} at equal or better throughput"
    ours_stall, theirs_stall = (
        _stat(summary, "remediator", "full_stall_pct"),
        _stat(summary, other, "full_stall_pct"),
    )
    ours_tput, theirs_tput = (
        _stat(summary, "remediator", "throughput_mib_s"),
        _stat(summary, other, "throughput_mib_s"),
    )
    if ours_stall is None or theirs_stall is None or ours_tput is None or theirs_tput is None:
        return _missing(scenario, name, "remediator", other)
    band = noise_band(theirs_tput, ours_tput, THROUGHPUT_NOISE_ABS_MIB_S, THROUGHPUT_NOISE_REL)
    tput_ok = ours_tput.median >= theirs_tput.median - band
    stall_ok = ours_stall.median < theirs_stall.median or (ours_stall.median == theirs_stall.median == 0)
    return Target(
        scenario,
        name,
        tput_ok and stall_ok,
        f"stall {_fmt(ours_stall.median, ' %')} vs {other} {_fmt(theirs_stall.median, ' %')}; "
        f"throughput {_fmt(ours_tput.median, '')} vs {_fmt(theirs_tput.median, '')} (noise {_fmt(band, '')})",
    )


def pg_targets(scenario: str, summary: Mapping[str, Any]) -> List[Target]:
    p99_name = "PostgreSQL: remediator p99 latency at least 30 % lower than none's"
    tps_name = "PostgreSQL: remediator TPS >= none's (within noise)"
    p99, p99_none = _stat(summary, "remediator", "lat_p99_ms"), _stat(summary, "none", "lat_p99_ms")
    tps, tps_none = (
        _stat(summary, "remediator", "throughput_mib_s"),
        _stat(summary, "none", "throughput_mib_s"),
    )
    out: List[Target] = []
    if p99 is None or p99_none is None:
        out.append(_missing(scenario, p99_name, "remediator", "none"))
    else:
        limit = p99_none.median * PG_P99_FRACTION_OF_NONE
        out.append(
            Target(
                scenario,
                p99_name,
                p99.median <= limit,
                f"p99 {_fmt(p99.median, ' ms')} vs none {_fmt(p99_none.median, ' ms')} "
                f"(limit {_fmt(limit, ' ms')})",
            )
        )
    if tps is None or tps_none is None:
        out.append(_missing(scenario, tps_name, "remediator", "none"))
    else:
        band = noise_band(tps_none, tps, THROUGHPUT_NOISE_ABS_MIB_S, THROUGHPUT_NOISE_REL)
        out.append(
            Target(
                scenario,
                tps_name,
                tps.median >= tps_none.median - band,
                f"{_fmt(tps.median, ' tps')} vs none {_fmt(tps_none.median, ' tps')} "
                f"(noise {_fmt(band, ' tps')})",
            )
        )
    return out


def targets_for(scenario: str, summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> List[Target]:
    """The issues' targets that apply to a scenario (issue 6's on its three, issue 13's on the matrix)."""
    targets: List[Target] = []
    definition = scenario_named(scenario)
    matrix = "senpai" in summary or any(name in summary for name in STATIC_GRID if name != "static")
    if matrix or scenario not in (
        "seed",
        "seed-flat-out",
        "seed-read",
        "seed-dirty",
        "tmpfs-heavy",
        "beyond-limit",
    ):
        targets.append(no_harm(scenario, summary))
        if scenario != "beyond-limit":
            targets.append(no_oom_kills_where_none_has_none(scenario, summary))
        if definition.page_cache:
            targets.append(page_cache_stall_target(scenario, summary))
            if "senpai" in summary:
                targets.append(lower_stall_than(scenario, summary, "senpai", "Senpai"))
            best = best_static(summary)
            if best is not None:
                targets.append(lower_stall_than(scenario, summary, best, f"the best static setting ({best})"))
        if definition.kind is WorkloadKind.PGBENCH:
            targets += pg_targets(scenario, summary)
        if scenario == "tmpfs-slow-fill":
            targets += [
                not_worse_than_none(scenario, summary, "remediator"),
                memory_high_not_lowered_with_reason(scenario, runs),
            ]
    if scenario.startswith("seed") and not matrix:
        targets += [
            stall_at_most_fraction_of(scenario, summary, "none", 0.25),
            stall_at_most_fraction_of(scenario, summary, "static", 0.25),
            throughput_at_least(scenario, summary, "remediator", 0.9),
            no_oom_kills_where_none_has_none(scenario, summary),
        ]
    if scenario == "tmpfs-heavy":
        targets += [
            not_worse_than_none(scenario, summary, "remediator"),
            memory_high_not_lowered_with_reason(scenario, runs),
        ]
    if scenario == "beyond-limit":
        targets += [
            oom_kills_at_most_none(scenario, summary),
            stall_not_worse(scenario, summary),
            not_reclaimable_record(scenario, runs),
        ]
    if "dry-run" in summary or not matrix:
        targets.append(within_noise_of_none(scenario, summary, runs))
    return targets


def summarize_runs(runs: Sequence[Mapping[str, Any]], scenarios: Sequence[str]) -> Dict[str, Any]:
    summary: Dict[str, Any] = {}
    for scenario in scenarios:
        per_series = {}
        for series in ALL_SERIES:
            chosen = ok_runs(runs, scenario, series)
            if chosen:
                per_series[series] = series_stats(chosen)
        best = best_static(per_series)
        if best is not None:
            per_series[STATIC_BEST] = {**per_series[best], "chosen": best}
        summary[scenario] = per_series
    return summary


def all_targets(
    runs: Sequence[Mapping[str, Any]], scenarios: Sequence[str], summary: Mapping[str, Any]
) -> List[Target]:
    return [target for scenario in scenarios for target in targets_for(scenario, summary[scenario], runs)]


# ---- Markdown ----------------------------------------------------------------------------


def _cell(stat: Optional[Mapping[str, Any]], fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    if stat is None:
        return "-"
    median = fmt.format(stat["median"] / scale)
    if len(stat["values"]) < 2:
        return median
    return f"{median} ({fmt.format(stat['min'] / scale)}-{fmt.format(stat['max'] / scale)})"


def _actions_cell(stats: Mapping[str, Any], runs: int) -> str:
    actions = stats.get("actions_total")
    if not actions:
        return "-"
    parts = []
    for kind, info in sorted(actions.items()):
        text = f"{kind} x{info['count'] / max(runs, 1):.3g}"
        if info.get("bytes"):
            text += f" ({info['bytes'] / MIB / max(runs, 1):.0f} MiB)"
        parts.append(text)
    return ", ".join(parts) + (" per run" if runs > 1 else "")


def _peak_breakdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """anon/file/shmem at the peak of the median-stall run (MiB)."""
    run = median_run(runs)
    if run is None:
        return "-"
    stat = run["metrics"]["stat_at_peak"]
    return f"{stat['anon'] / MIB:.0f}/{(stat['file'] - stat['shmem']) / MIB:.0f}/{stat['shmem'] / MIB:.0f}"


def throughput_unit(scenario: str) -> str:
    return "tps" if scenario_named(scenario).kind is WorkloadKind.PGBENCH else "MiB/s"


def _is_neighbour(scenario: str) -> bool:
    return scenario_named(scenario).kind is WorkloadKind.NEIGHBOUR


def _high_at_end(runs: Sequence[Mapping[str, Any]]) -> str:
    """memory.high in the last sample of each run (MiB, or max), before the agent was stopped."""
    values = []
    for run in runs:
        high = run.get("metrics", {}).get("memory_high_end")
        values.append("max" if high is None else f"{int(high) / MIB:.0f}")
    return ", ".join(values) if values else "-"


def matrix_markdown(results: Mapping[str, Any]) -> str:
    """One table, scenario x series: full stall %, throughput and p99 latency (medians)."""
    summary = results["summary"]
    present = [name for name in ALL_SERIES if any(name in summary[s] for s in results["scenarios"])]
    lines = [
        "| scenario | " + " | ".join(SERIES_TITLES[name] for name in present) + " |",
        "| --- " * (len(present) + 1) + "|",
    ]
    for scenario in results["scenarios"]:
        cells = []
        for name in present:
            stats = summary[scenario].get(name)
            if stats is None:
                cells.append("-")
                continue
            stall = stats.get("full_stall_pct", {}).get("median")
            tput = stats.get("throughput_mib_s", {}).get("median")
            p99 = stats.get("lat_p99_ms", {}).get("median")
            parts = [
                "-" if stall is None else f"{stall:.1f} %",
                "-" if tput is None else f"{tput:.1f} {throughput_unit(scenario)}",
                "-" if p99 is None else f"p99 {p99:.0f} ms",
            ]
            cells.append(" / ".join(parts))
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cells: median full stall % of the run / throughput / p99 latency of the workload's requests "
        "(fio's I/Os, pgbench's transactions, the loop's 4 MiB chunks; the neighbour: the sensitive "
        "service).",
    ]
    return "\n".join(lines)


def median_run(runs: Sequence[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The run whose full stall is the median (the lower middle one for an even count)."""
    if not runs:
        return None
    ordered = sorted(runs, key=lambda run: run["metrics"]["full_stall_pct"])
    return ordered[(len(ordered) - 1) // 2]


def environment_lines(environment: Mapping[str, Any]) -> List[str]:
    lines = [
        "| machine | kernel | CPU | cores | emulation | load average (start -> end) | date (UTC) |",
        "| --- " * 7 + "|",
    ]
    for role, env in environment.items():
        if not isinstance(env, Mapping) or "kernel" not in env:
            continue
        load = env.get("load_average", "")
        if env.get("load_average_end"):
            load = f"{load} -> {env['load_average_end']}"
        lines.append(
            f"| {role} | {env.get('kernel')} | {env.get('cpu_model')} | {env.get('cores')} | "
            f"{env.get('emulation')} | {load} | {env.get('date_utc')} |"
        )
    return lines


def _policies_source(results: Mapping[str, Any]) -> str:
    directory = str(results.get("policies_dir", "policies"))
    shipped = directory.rstrip("/").endswith("/policies") or directory == "policies"
    return "the shipped policies/" if shipped else f"{directory} (not the shipped ones)"


def markdown(results: Mapping[str, Any]) -> str:
    runs: Sequence[Mapping[str, Any]] = results["runs"]
    lines = [
        f"# Efficacy benchmark: {results['mode']} ({'quick' if results['quick'] else 'full'} mode)",
        "",
        f"{results['repeats']} run(s) per series, {results['duration_sec']:g} s each; "
        f"memory.max {results.get('memory_max_mib', 256)} MiB, no swap; "
        f"finished {results.get('finished_utc')} "
        f"in {results.get('elapsed_sec', 0) / 60:.1f} min (commit {results.get('commit') or 'unknown'}); "
        f"the daemon's policies: {_policies_source(results)}. Cells are the median (min-max) over the runs.",
        "",
        "## Environment",
        "",
        *environment_lines(results.get("environment", {})),
        "",
    ]
    summary = results["summary"]
    if len(results["scenarios"]) > 1:
        lines += ["## The matrix", "", matrix_markdown(results), ""]
    senpai = results.get("senpai")
    if senpai:
        lines += [f"Senpai: {senpai.get('path')}: {senpai.get('reason')}", ""]
    for scenario in results["scenarios"]:
        scenario_def = scenario_named(scenario)
        lines += [
            f"## {scenario}: {scenario_def.title}",
            "",
            scenario_def.purpose[:1].upper() + scenario_def.purpose[1:] + ".",
            "",
            "| series | full stall % | some stall % | full avg10 peak | full avg10 mean, 2nd half | "
            f"throughput {throughput_unit(scenario)} | latency p50 / p99 ms | stall s/GiB | OOM kills | "
            "lived s (full stall % meanwhile) | peak MiB | "
            "anon/file/shmem at peak | events high / max | memory.high at end MiB | actions | agent CPU s |"
            + (" batch job MiB/s | stall % sensitive / batch |" if _is_neighbour(scenario) else ""),
            "| --- " * (18 if _is_neighbour(scenario) else 16) + "|",
        ]
        for series in ALL_SERIES:
            stats = summary[scenario].get(series)
            if stats is None:
                continue
            chosen = ok_runs(runs, scenario, series)
            lines.append(
                "| "
                + " | ".join(
                    [
                        SERIES_TITLES[series],
                        _cell(stats.get("full_stall_pct")),
                        _cell(stats.get("some_stall_pct")),
                        _cell(stats.get("full_avg10_peak")),
                        _cell(stats.get("full_avg10_mean_second_half")),
                        _cell(stats.get("throughput_mib_s")),
                        f"{_cell(stats.get('lat_p50_ms'))} / {_cell(stats.get('lat_p99_ms'))}",
                        _cell(stats.get("stall_sec_per_gib"), "{:.2f}"),
                        _cell(stats.get("oom_kills"), "{:.0f}"),
                        f"{_cell(stats.get('alive_sec'), '{:.0f}')} "
                        f"({_cell(stats.get('full_stall_pct_alive'))})",
                        _cell(stats.get("peak_current"), "{:.0f}", MIB),
                        _peak_breakdown(chosen),
                        f"{_cell(stats.get('events_high_delta'), '{:.0f}')} / "
                        f"{_cell(stats.get('events_max_delta'), '{:.0f}')}",
                        _high_at_end(chosen),
                        _actions_cell(stats, len(chosen)),
                        _cell(stats.get("remediator_cpu_sec") or stats.get("senpai_cpu_sec"), "{:.1f}"),
                    ]
                    + (
                        [
                            _cell(stats.get("batch_throughput_mib_s")),
                            f"{_cell(stats.get('sensitive_full_stall_pct'))} / "
                            f"{_cell(stats.get('batch_full_stall_pct'))}",
                        ]
                        if _is_neighbour(scenario)
                        else []
                    )
                )
                + " |"
            )
        best = summary[scenario].get(STATIC_BEST)
        if best is not None:
            lines += [
                "",
                f"Best static setting: {SERIES_TITLES[best['chosen']]} (lowest stall at none's throughput).",
            ]
        lines.append("")
        targets = [t for t in results["targets"] if t["scenario"] == scenario]
        for target in targets:
            mark = {True: "met", False: "**MISSED**", None: "not judged"}[target["met"]]
            lines.append(f"- {target['target']}: {mark}. {target['detail']}")
        picture = results.get("pictures", {}).get(scenario)
        if picture:
            lines += ["", f"![{scenario}: none vs remediator]({picture})"]
        lines.append("")
    notes = results.get("notes")
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)
