"""The issue's targets, judged on hand-made runs: each one can be met and can be missed."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from bench.efficacy.report import (
    STALL_NOISE_ABS_PCT,
    Target,
    markdown,
    noise_band,
    stat_of,
    summarize_runs,
    targets_for,
)
from remediator.records import RecordType

MIB = 1 << 20


def run(
    scenario: str,
    series: str,
    stall: float,
    throughput: float = 100.0,
    oom_kills: int = 0,
    records: Sequence[Dict[str, Any]] = (),
    memory_high_after_run: str = "max",
) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "scenario": scenario,
        "series": series,
        "memory_high_after_run": memory_high_after_run,
        "metrics": {
            "window_sec": 30.0,
            "full_stall_pct": stall,
            "full_stall_pct_alive": stall,
            "alive_sec": 30.0,
            "some_stall_pct": stall,
            "full_avg10_peak": stall,
            "full_avg10_mean_second_half": stall,
            "mib_scanned": throughput * 30,
            "throughput_mib_s": throughput,
            "oom_kills": oom_kills,
            "oom_kill_at_sec": [],
            "peak_current": 256 * MIB,
            "stat_at_peak": {"anon": 115 * MIB, "file": 130 * MIB, "shmem": 0},
            "events_high_delta": 0,
            "events_max_delta": 100,
        },
    }
    if series in ("remediator", "dry-run"):
        out["records"] = list(records)
        out["metrics"]["remediator"] = {"actions": {}, "cpu_sec": 1.0}
    return out


def judged(scenario: str, runs: List[Dict[str, Any]]) -> Dict[str, Target]:
    summary = summarize_runs(runs, [scenario])
    return {target.name: target for target in targets_for(scenario, summary[scenario], runs)}


def seed_runs(remediator_stall: float, remediator_throughput: float = 97.0) -> List[Dict[str, Any]]:
    return [
        *(run("seed", "none", stall) for stall in (16.0, 18.0, 20.0)),
        *(run("seed", "static", stall) for stall in (15.0, 16.0, 17.0)),
        *(run("seed", "remediator", remediator_stall, remediator_throughput) for _ in range(3)),
        *(run("seed", "dry-run", stall) for stall in (17.0, 18.0, 19.0)),
    ]


def test_seed_stall_target_is_met_at_a_quarter_of_none_and_of_static() -> None:
    targets = judged("seed", seed_runs(remediator_stall=3.5))

    assert targets["remediator full stall <= 1/4 of none's"].met is True
    assert targets["remediator full stall <= 1/4 of static's"].met is True
    assert targets["remediator throughput >= 90% of none's"].met is True


def test_seed_stall_target_is_missed_above_a_quarter_of_static() -> None:
    targets = judged("seed", seed_runs(remediator_stall=4.4))

    assert targets["remediator full stall <= 1/4 of none's"].met is True  # 4.4 <= 4.5
    assert targets["remediator full stall <= 1/4 of static's"].met is False  # 4.4 > 4.0


def test_seed_throughput_below_ninety_percent_of_none_is_a_miss() -> None:
    targets = judged("seed", seed_runs(remediator_stall=1.0, remediator_throughput=89.0))

    assert targets["remediator throughput >= 90% of none's"].met is False


def test_an_oom_kill_under_remediator_is_a_miss_only_where_none_had_none() -> None:
    runs = seed_runs(remediator_stall=1.0)
    runs[6] = run("seed", "remediator", 1.0, oom_kills=1)
    assert judged("seed", runs)["zero OOM kills wherever none has zero"].met is False

    runs[0] = run("seed", "none", 16.0, oom_kills=1)
    assert judged("seed", runs)["zero OOM kills wherever none has zero"].met is True


def test_dry_run_that_wrote_something_is_a_miss_even_within_noise() -> None:
    wrote = {
        "MESSAGE_ID": RecordType.ACTION_APPLIED.message_id,
        "REMEDIATOR_RESULT": "applied",
        "REMEDIATOR_DRY_RUN": "0",
    }
    runs = seed_runs(remediator_stall=1.0)
    assert judged("seed", runs)["dry-run within noise of none, and nothing changed"].met is True

    runs[9] = run("seed", "dry-run", 18.0, records=[wrote])
    assert judged("seed", runs)["dry-run within noise of none, and nothing changed"].met is False


def test_dry_run_far_outside_noise_of_none_is_a_miss() -> None:
    runs = seed_runs(remediator_stall=1.0)
    for index in (9, 10, 11):
        runs[index] = run("seed", "dry-run", 40.0)

    assert judged("seed", runs)["dry-run within noise of none, and nothing changed"].met is False


def test_tmpfs_heavy_needs_a_record_saying_why_memory_high_was_not_lowered() -> None:
    why = {
        "MESSAGE_ID": RecordType.ACTION_DECLINED.message_id,
        "REMEDIATOR_ACTION": "memory_high",
        "MESSAGE": "unreclaimable memory (...) leaves no room for memory.high below memory.max",
    }
    lowered = {
        "MESSAGE_ID": RecordType.ACTION_APPLIED.message_id,
        "REMEDIATOR_ACTION": "memory_high",
        "REMEDIATOR_RESULT": "applied",
        "MESSAGE": "set memory.high",
    }
    base = [run("tmpfs-heavy", "none", 20.0), run("tmpfs-heavy", "dry-run", 20.0)]
    name = "records say why memory.high was not lowered"

    escalated = {"MESSAGE_ID": RecordType.ESCALATED.message_id, "REMEDIATOR_ACTION": "reclaim"}
    assert judged("tmpfs-heavy", [*base, run("tmpfs-heavy", "remediator", 20.0, records=[why])])[name].met
    # Reclaim answered every pressure: memory.high was never on the table.
    assert judged("tmpfs-heavy", [*base, run("tmpfs-heavy", "remediator", 20.0)])[name].met is True
    silent = run("tmpfs-heavy", "remediator", 20.0, records=[escalated])
    assert judged("tmpfs-heavy", [*base, silent])[name].met is False
    with_lowered = run("tmpfs-heavy", "remediator", 20.0, records=[why, lowered])
    assert judged("tmpfs-heavy", [*base, with_lowered])[name].met is False


def test_tmpfs_heavy_remediator_worse_than_none_beyond_noise_is_a_miss() -> None:
    base = [run("tmpfs-heavy", "none", 20.0), run("tmpfs-heavy", "dry-run", 20.0)]
    name = "remediator never worse than none (stall and throughput within noise)"

    assert judged("tmpfs-heavy", [*base, run("tmpfs-heavy", "remediator", 24.0)])[name].met is True
    assert judged("tmpfs-heavy", [*base, run("tmpfs-heavy", "remediator", 60.0)])[name].met is False
    slow = run("tmpfs-heavy", "remediator", 20.0, throughput=25.0)
    assert judged("tmpfs-heavy", [*base, slow])[name].met is False


def test_beyond_limit_targets_oom_kills_and_the_not_reclaimable_record() -> None:
    why = {
        "MESSAGE_ID": RecordType.ACTION_DECLINED.message_id,
        "MESSAGE": "condition min_reclaimable_fraction failed: clean page cache is 2 MiB = 1 % of 256 MiB",
    }
    runs = [
        run("beyond-limit", "none", 5.0, oom_kills=1),
        run("beyond-limit", "dry-run", 5.0, oom_kills=1),
        run("beyond-limit", "remediator", 5.0, oom_kills=1, records=[why]),
    ]
    targets = judged("beyond-limit", runs)

    assert targets["no more OOM kills than none"].met is True
    assert targets["remediator stall no worse than none's while the workload lived (within noise)"].met
    assert targets["a record explains that the memory is not reclaimable"].met is True

    runs[2] = run("beyond-limit", "remediator", 5.0, oom_kills=2)
    targets = judged("beyond-limit", runs)
    assert targets["no more OOM kills than none"].met is False
    assert targets["a record explains that the memory is not reclaimable"].met is False


def test_a_missing_series_is_not_judged_rather_than_met() -> None:
    targets = judged("seed", [run("seed", "remediator", 1.0)])

    assert targets["remediator full stall <= 1/4 of none's"].met is None


def test_noise_band_with_one_run_each_is_the_floor_and_grows_with_the_spread() -> None:
    single = stat_of([10.0])
    spread = stat_of([8.0, 10.0, 14.0])
    assert single is not None and spread is not None

    assert noise_band(single, single, STALL_NOISE_ABS_PCT, 0.0) == STALL_NOISE_ABS_PCT
    assert noise_band(spread, spread, 0.0, 0.0) == 6.0  # half-range 3 + 3


def test_markdown_shows_every_series_row_and_every_target() -> None:
    runs = seed_runs(remediator_stall=3.0)
    summary = summarize_runs(runs, ["seed"])
    results = {
        "mode": "vm",
        "quick": False,
        "repeats": 3,
        "duration_sec": 30.0,
        "scenarios": ["seed"],
        "runs": runs,
        "summary": summary,
        "targets": [t.as_json() for t in targets_for("seed", summary["seed"], runs)],
        "environment": {"vm-guest": {"kernel": "6.1.0-56-amd64", "cpu_model": "QEMU TCG", "cores": 2}},
        "pictures": {"seed": "efficacy-seed.png"},
    }

    text = markdown(results)

    assert "\n| remediator (shipped policies, enforcing) | 3.0 " in text
    assert "\n| remediator dry-run | 18.0 (17.0-19.0)" in text
    assert "| none (kernel alone) | 18.0 (16.0-20.0)" in text
    assert "6.1.0-56-amd64" in text
    assert "![seed: none vs remediator](efficacy-seed.png)" in text
    assert text.count("\n- ") == 5
