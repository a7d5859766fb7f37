"""Issue 13's matrix: metrics of the new workloads and the targets judged on them, on hand-made runs."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from bench.efficacy.metrics import clean_cache_share, request_latencies, summarize
from bench.efficacy.report import (
    STATIC_BEST,
    Target,
    best_static,
    markdown,
    matrix_markdown,
    summarize_runs,
    targets_for,
)

MIB = 1 << 20


def run(
    scenario: str,
    series: str,
    stall: float,
    throughput: float = 30.0,
    p99: Optional[float] = 50.0,
    clean_share: float = 0.5,
    oom_kills: int = 0,
) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "scenario": scenario,
        "series": series,
        "memory_high_after_run": "max",
        "metrics": {
            "window_sec": 20.0,
            "full_stall_pct": stall,
            "full_stall_pct_alive": stall,
            "alive_sec": 20.0,
            "some_stall_pct": stall,
            "mib_scanned": throughput * 20,
            "throughput_mib_s": throughput,
            "lat_p50_ms": None if p99 is None else p99 / 10,
            "lat_p99_ms": p99,
            "oom_kills": oom_kills,
            "oom_kill_at_sec": [],
            "peak_current": 256 * MIB,
            "stat_at_peak": {"anon": 115 * MIB, "file": 130 * MIB, "shmem": 0},
            "clean_cache_share_at_pressure": clean_share,
            "memory_high_end": None,
        },
    }
    if series in ("remediator", "dry-run"):
        out["records"] = []
        out["metrics"]["remediator"] = {"actions": {}, "cpu_sec": 1.0}
    return out


def matrix_runs(scenario: str, **remediator: Any) -> List[Dict[str, Any]]:
    """Two runs of every matrix series; the remediator's figures as given."""
    figures = {
        "none": {"stall": 8.0, "throughput": 30.0, "p99": 50.0},
        "static": {"stall": 9.0, "throughput": 30.0, "p99": 55.0},
        "static-0.75": {"stall": 5.0, "throughput": 29.0, "p99": 45.0},
        "static-0.6": {"stall": 2.0, "throughput": 12.0, "p99": 400.0},
        "senpai": {"stall": 8.0, "throughput": 30.0, "p99": 50.0},
        "dry-run": {"stall": 8.0, "throughput": 30.0, "p99": 50.0},
        "remediator": {"stall": 1.0, "throughput": 30.0, "p99": 20.0, **remediator},
    }
    return [run(scenario, series, **values) for series, values in figures.items() for _ in range(2)]


def judged(scenario: str, runs: List[Dict[str, Any]]) -> Dict[str, Target]:
    summary = summarize_runs(runs, [scenario])
    return {target.name: target for target in targets_for(scenario, summary[scenario], runs)}


def by_start(targets: Dict[str, Target], start: str) -> Target:
    return next(target for name, target in targets.items() if name.startswith(start))


def test_best_static_is_the_lowest_stall_among_settings_that_keep_none_s_throughput() -> None:
    runs = matrix_runs("fio-write")
    summary = summarize_runs(runs, ["fio-write"])["fio-write"]

    # 0.6 stalls least but throttles the writer to 12 of 30 MiB/s: it is no cure.
    assert best_static(summary) == "static-0.75"
    assert summary[STATIC_BEST]["chosen"] == "static-0.75"


def test_every_matrix_target_is_met_when_remediator_beats_none_senpai_and_the_best_static() -> None:
    targets = judged("fio-read", matrix_runs("fio-read"))

    assert all(target.met for target in targets.values()), [t for t in targets.values() if not t.met]
    assert "Senpai" in " ".join(targets)
    assert any("static-0.75" in name for name in targets)


def test_a_p99_latency_worse_than_none_beyond_noise_is_harm() -> None:
    targets = judged("fio-read", matrix_runs("fio-read", p99=90.0))

    assert by_start(targets, "do no harm").met is False


def test_read_streaming_must_cut_the_stall_to_a_quarter_of_none() -> None:
    targets = judged("fio-read", matrix_runs("fio-read", stall=3.0))

    assert by_start(targets, "remediator full stall <= 1/4").met is False


def test_the_half_stall_target_is_not_judged_where_clean_cache_was_under_a_fifth_of_usage() -> None:
    runs = matrix_runs("fio-write-slow", stall=7.0)
    for item in runs:
        item["metrics"]["clean_cache_share_at_pressure"] = 0.1

    target = by_start(judged("fio-write-slow", runs), "remediator full stall <= 1/2")

    assert target.met is None and "not applicable" in target.detail


def test_lower_stall_than_senpai_needs_equal_throughput_too() -> None:
    targets = judged("fio-write", matrix_runs("fio-write", stall=1.0, throughput=15.0))

    assert by_start(targets, "remediator: lower stall than Senpai").met is False


def test_postgres_needs_p99_thirty_percent_lower_and_tps_at_least_none_s() -> None:
    met = judged("pgbench", matrix_runs("pgbench", p99=30.0))
    missed = judged("pgbench", matrix_runs("pgbench", p99=40.0))

    assert by_start(met, "PostgreSQL: remediator p99").met is True
    assert by_start(missed, "PostgreSQL: remediator p99").met is False
    assert by_start(met, "PostgreSQL: remediator TPS").met is True


def test_matrix_table_has_one_row_per_scenario_with_stall_throughput_and_p99() -> None:
    runs = matrix_runs("fio-read") + matrix_runs("pgbench")
    summary = summarize_runs(runs, ["fio-read", "pgbench"])
    results = {"scenarios": ["fio-read", "pgbench"], "summary": summary}

    table = matrix_markdown(results)

    rows = [line for line in table.splitlines() if line.startswith(("| fio-read", "| pgbench"))]
    assert len(rows) == 2
    assert "1.0 % / 30.0 MiB/s / p99 20 ms" in rows[0]
    assert "tps" in rows[1]


def test_markdown_of_a_matrix_names_the_best_static_setting() -> None:
    runs = matrix_runs("fio-read")
    summary = summarize_runs(runs, ["fio-read"])
    results = {
        "mode": "vm",
        "quick": False,
        "repeats": 2,
        "duration_sec": 20.0,
        "scenarios": ["fio-read"],
        "runs": runs,
        "summary": summary,
        "targets": [t.as_json() for t in targets_for("fio-read", summary["fio-read"], runs)],
    }

    text = markdown(results)

    assert "Best static setting: static memory.high = 0.75 x memory.max" in text
    assert "latency p50 / p99 ms" in text


def sample(t: float, full_us: int, active: int, inactive: int, dirty: int = 0) -> Dict[str, Any]:
    return {
        "t": t,
        "current": 200 * MIB,
        "high": None,
        "stat": {
            "anon": 100 * MIB,
            "file": (active + inactive) * MIB,
            "shmem": 0,
            "active_file": active * MIB,
            "inactive_file": inactive * MIB,
            "file_dirty": dirty * MIB,
            "file_writeback": 0,
        },
        "some_avg10": 0.0,
        "some_total_us": full_us,
        "full_avg10": 0.0,
        "full_total_us": full_us,
        "events": {"high": 0, "max": 0, "oom": 0, "oom_kill": 0},
    }


def test_clean_cache_share_leaves_out_dirty_pages() -> None:
    assert clean_cache_share(sample(0.0, 0, 60, 40, dirty=50)) == 0.25


def test_request_latency_percentiles_come_from_the_chunks_in_the_window() -> None:
    progress = [
        {"event": "scan", "mib": 4.0 * i, "lat_ms": float(i), "arrived": i * 0.1} for i in range(1, 101)
    ]
    progress.append({"event": "scan", "mib": 999.0, "lat_ms": 10_000.0, "arrived": 99.0})

    figures = request_latencies(progress, end_t=10.0)

    assert figures == {"lat_p50_ms": 50.0, "lat_p99_ms": 99.0}


def test_a_tool_s_latency_is_its_own_and_its_throughput_the_window_s() -> None:
    progress = [
        {"event": "scan", "mib": 100.0, "arrived": 5.0},
        {"event": "scan", "mib": 200.0, "arrived": 10.0},
        {"event": "result", "throughput": 99.0, "lat_p50_ms": 1.0, "lat_p99_ms": 80.0, "arrived": 14.0},
    ]
    samples = [sample(0.0, 0, 60, 40), sample(10.0, 500_000, 60, 40)]

    metrics = summarize({"samples": samples, "progress": progress})

    assert metrics["throughput_mib_s"] == 20.0
    assert metrics["lat_p99_ms"] == 80.0
    assert metrics["clean_cache_share_at_pressure"] == 0.5


def test_the_neighbour_s_figures_are_the_sensitive_service_s_with_the_batch_job_beside() -> None:
    samples = [sample(0.0, 0, 60, 40), sample(10.0, 1_000_000, 60, 40)]
    services = {
        "sensitive.service": {
            "metrics": {"throughput_mib_s": 16.0, "lat_p99_ms": 30.0, "full_stall_pct": 4.0}
        },
        "batch.service": {"metrics": {"throughput_mib_s": 50.0, "full_stall_pct": 12.0}},
    }

    metrics = summarize({"samples": samples, "progress": [], "services": services})

    assert metrics["throughput_mib_s"] == 16.0 and metrics["lat_p99_ms"] == 30.0
    assert metrics["batch_throughput_mib_s"] == 50.0
    assert metrics["sensitive_full_stall_pct"] == 4.0 and metrics["batch_full_stall_pct"] == 12.0


def test_matrix_plan_runs_every_series_once_and_repeats_only_the_compared_ones() -> None:
    from bench.efficacy.__main__ import MATRIX_REPEATED_SERIES, plan_runs
    from bench.efficacy.scenarios import MATRIX_SERIES

    plan = plan_runs(["fio-read", "tmpfs-heavy"], 2, 20.0, MATRIX_SERIES, MATRIX_REPEATED_SERIES)

    first = {vm[0]["scenario"]: sorted(run["series"] for run in vm) for vm in plan if vm[0]["repeat"] == 0}
    second = {vm[0]["scenario"]: sorted(run["series"] for run in vm) for vm in plan if vm[0]["repeat"] == 1}
    assert first["fio-read"] == sorted(MATRIX_SERIES)
    # The static grid's lower points only where page cache is the subject.
    assert "static-0.6" not in first["tmpfs-heavy"] and "static" in first["tmpfs-heavy"]
    assert second == {"fio-read": ["none", "remediator"], "tmpfs-heavy": ["none", "remediator"]}
