"""The metrics textfile: counters for scripted records, gauges, the cardinality cap, atomic replacement.

Every check parses the rendered text back with prometheus_client's own parser.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from remediator.identity import Identity, parse_cgroup
from remediator.metrics import (
    CgroupPressure,
    DeclineReason,
    Metrics,
    MetricsWriteError,
    PolicyState,
    WatchMode,
    decline_reason,
)
from remediator.records import Knob, Record, RecordType, Result

CGROUP = "system.slice/web.service"
Sample = Dict[Tuple[Tuple[str, str], ...], float]


def samples(metrics: Metrics) -> Dict[str, Sample]:
    """sample name -> {sorted labels: value}, parsed from the rendered text."""
    out: Dict[str, Sample] = {}
    for family in text_string_to_metric_families(metrics.render().decode("utf-8")):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> Optional[float]:
    return samples(metrics).get(name, {}).get(tuple(sorted(labels.items())))


def record(
    record_type: RecordType,
    result: str = "",
    action: Optional[Knob] = None,
    dry_run: bool = False,
    policy: str = "web",
    **extra: str,
) -> Record:
    return Record(
        type=record_type,
        message="m",
        policy=policy,
        cgroup=CGROUP,
        action=action,
        result=result,
        dry_run=dry_run,
        extra=extra,
    )


def test_actions_count_by_policy_action_result_and_mode() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe(
            record(
                RecordType.ACTION_APPLIED,
                Result.APPLIED,
                Knob.RECLAIM,
                RECLAIM_COMPLETED_BYTES="1048576",
            )
        )
    metrics.observe(
        record(RecordType.ACTION_APPLIED, Result.PARTIAL, Knob.RECLAIM, RECLAIM_COMPLETED_BYTES="4096")
    )
    metrics.observe(record(RecordType.ACTION_FAILED, Result.FAILED, Knob.MEMORY_HIGH))

    assert (
        value(
            metrics, "remediator_actions_total", policy="web", action="reclaim", result="applied", dry_run="0"
        )
        == 3
    )
    assert (
        value(
            metrics, "remediator_actions_total", policy="web", action="reclaim", result="partial", dry_run="0"
        )
        == 1
    )
    assert (
        value(
            metrics,
            "remediator_actions_total",
            policy="web",
            action="memory_high",
            result="failed",
            dry_run="0",
        )
        == 1
    )
    assert value(metrics, "remediator_reclaimed_bytes_total", policy="web") == 3 * 1048576 + 4096


def test_dry_run_actions_are_would_with_the_dry_run_label_and_reclaim_nothing() -> None:
    metrics = Metrics(dry_run=True)
    # As the daemon holds it: the enforcing wording with dry_run set.
    metrics.observe(
        record(
            RecordType.ACTION_APPLIED,
            Result.APPLIED,
            Knob.RECLAIM,
            dry_run=True,
            RECLAIM_COMPLETED_BYTES="99",
        )
    )
    # As presented: already "would".
    metrics.observe(record(RecordType.ACTION_APPLIED, Result.WOULD, Knob.RECLAIM, dry_run=True))

    assert (
        value(
            metrics, "remediator_actions_total", policy="web", action="reclaim", result="would", dry_run="1"
        )
        == 2
    )
    assert value(metrics, "remediator_reclaimed_bytes_total", policy="web") is None
    assert value(metrics, "remediator_dry_run") == 1


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("rung1:no_room_above_floor", DeclineReason.FLOOR),
        ("rung0:too_little_cache", DeclineReason.NOT_RECLAIMABLE),
        ("rung0:cooldown", DeclineReason.COOLDOWN),
        ("cooldown", DeclineReason.COOLDOWN),
        ("rung2:max_per_hour", DeclineReason.RATE_LIMIT),
        ("rung2:node_rate_limit", DeclineReason.RATE_LIMIT),
        ("condition:min_reclaimable_fraction", DeclineReason.CONDITIONS),
        ("condition:memory_high_unset", DeclineReason.CONDITIONS),
        ("rung1:other_writer", DeclineReason.OTHER_WRITER),
        ("rung2:vfs_owned_elsewhere", DeclineReason.OTHER_WRITER),
        ("rung0:no_memory_reclaim", DeclineReason.NO_KERNEL_SUPPORT),
        ("rung1:backed_off", DeclineReason.BACKED_OFF),
        ("rung2:node_wide_not_allowed", DeclineReason.NOT_ALLOWED),
        ("ladder_exhausted", DeclineReason.LADDER_EXHAUSTED),
        ("rung1:already_low", DeclineReason.OTHER),
        ("rung1:no_memory_max", DeclineReason.OTHER),
        ("something_new", DeclineReason.OTHER),
        ("", DeclineReason.OTHER),
        ("rungX:no_room_above_floor", DeclineReason.OTHER),
    ],
)
def test_decline_reason_keys_map_to_the_fixed_set(key: str, reason: DeclineReason) -> None:
    assert decline_reason(key) is reason


def test_declines_count_by_mapped_reason_and_never_as_actions() -> None:
    metrics = Metrics()
    for _ in range(4):
        metrics.observe(
            record(
                RecordType.ACTION_DECLINED,
                Result.DECLINED,
                Knob.MEMORY_HIGH,
                REASON="rung1:no_room_above_floor",
            )
        )
    metrics.observe(
        record(RecordType.ACTION_DECLINED, Result.DECLINED, REASON="condition:min_reclaimable_fraction")
    )
    metrics.observe(record(RecordType.ACTION_DECLINED, Result.DECLINED, Knob.RECLAIM))

    assert (
        value(metrics, "remediator_declines_total", policy="web", action="memory_high", reason="floor") == 4
    )
    assert value(metrics, "remediator_declines_total", policy="web", action="", reason="conditions") == 1
    assert value(metrics, "remediator_declines_total", policy="web", action="reclaim", reason="other") == 1
    assert "remediator_actions_total" not in samples(metrics)


def test_restores_back_offs_and_pressure_events() -> None:
    metrics = Metrics()
    metrics.observe(record(RecordType.PRESSURE_CONFIRMED))
    metrics.observe(record(RecordType.PRESSURE_CONFIRMED))
    metrics.observe(record(RecordType.ROLLED_BACK, Result.RESTORED, Knob.MEMORY_HIGH))
    metrics.observe(record(RecordType.STOOD_BACK, Result.NOT_RESTORED, Knob.MEMORY_HIGH))
    metrics.observe(record(RecordType.STATE_RECOVERED, Result.RECOVERED, Knob.MEMORY_HIGH))
    metrics.observe(record(RecordType.BACKED_OFF, Result.RESTORED, Knob.MEMORY_HIGH))
    # dry-run: the restore is presented "would", and is still a restore
    metrics.observe(record(RecordType.ROLLED_BACK, Result.RESTORED, Knob.MEMORY_HIGH, dry_run=True))

    assert value(metrics, "remediator_pressure_events_total", policy="web") == 2
    assert value(metrics, "remediator_backoffs_total", policy="web") == 1
    assert value(metrics, "remediator_restores_total", policy="web", result="restored") == 2
    assert value(metrics, "remediator_restores_total", policy="web", result="not_restored") == 1
    assert value(metrics, "remediator_restores_total", policy="web", result="recovered") == 1
    assert value(metrics, "remediator_restores_total", policy="web", result="would") == 1
    assert "remediator_actions_total" not in samples(metrics), "a restore is not counted as an action"


def test_a_stood_back_release_is_stood_back_and_a_store_failure_beside_a_write_is_not_counted_twice() -> None:
    metrics = Metrics()
    metrics.observe(record(RecordType.STOOD_BACK, Result.APPLIED, Knob.MEMORY_HIGH))
    metrics.observe(record(RecordType.ACTION_APPLIED, Result.APPLIED, Knob.MEMORY_HIGH))
    metrics.observe(record(RecordType.STATE_UNWRITABLE, Result.APPLIED, Knob.MEMORY_HIGH))
    metrics.observe(record(RecordType.STATE_UNWRITABLE, Result.REFUSED, Knob.MEMORY_HIGH))

    counted = samples(metrics)["remediator_actions_total"]
    assert counted == {
        (("action", "memory_high"), ("dry_run", "0"), ("policy", "web"), ("result", "applied")): 1,
        (("action", "memory_high"), ("dry_run", "0"), ("policy", "web"), ("result", "refused")): 1,
        (("action", "memory_high"), ("dry_run", "0"), ("policy", "web"), ("result", "stood_back")): 1,
    }


def test_daemon_records_and_garbage_figures_count_nothing() -> None:
    metrics = Metrics()
    metrics.observe(Record(RecordType.DAEMON_STARTED, "starting", result="started"))
    metrics.observe(record(RecordType.WATCH_STARTED, "trigger"))
    metrics.observe(
        record(RecordType.ACTION_APPLIED, Result.APPLIED, Knob.RECLAIM, RECLAIM_COMPLETED_BYTES="-5")
    )
    metrics.observe(
        record(RecordType.ACTION_APPLIED, Result.APPLIED, Knob.RECLAIM, RECLAIM_COMPLETED_BYTES="9" * 40)
    )

    found = samples(metrics)
    assert "remediator_reclaimed_bytes_total" not in found
    assert sum(found["remediator_actions_total"].values()) == 2


def test_state_gauges_replace_what_was_set_before() -> None:
    metrics = Metrics(version="1.2.3", python="3.11.2", kernel="6.1.0-18-amd64")
    metrics.set_watched_targets({("web", WatchMode.TRIGGER): 40, ("batch", WatchMode.SAMPLING): 2})
    metrics.set_watched_targets({("web", WatchMode.TRIGGER): 41})
    metrics.set_owned_values({"memory_high": 3, "vfs_cache_pressure": 1})
    metrics.set_policies({PolicyState.LOADED: 2, PolicyState.DISABLED: 1})
    metrics.reload_succeeded(1_700_000_123.5)
    metrics.reload_failed()
    metrics.reload_failed()

    found = samples(metrics)
    assert found["remediator_watched_targets"] == {(("mode", "trigger"), ("policy", "web")): 41}
    assert value(metrics, "remediator_owned_values", knob="memory_high") == 3
    assert found["remediator_policies"] == {
        (("state", "loaded"),): 2,
        (("state", "rejected"),): 0,
        (("state", "disabled"),): 1,
    }
    assert value(metrics, "remediator_last_reload_success_timestamp_seconds") == 1_700_000_123.5
    assert value(metrics, "remediator_reload_failures_total") == 2
    assert (
        value(metrics, "remediator_build_info", version="1.2.3", python="3.11.2", kernel="6.1.0-18-amd64")
        == 1
    )
    assert value(metrics, "remediator_dry_run") == 0


def pressure(cgroup: str, avg10: float) -> CgroupPressure:
    return CgroupPressure(parse_cgroup(cgroup), avg10)


def test_cgroup_pressure_carries_the_pod_identity() -> None:
    metrics = Metrics()
    uid = "0b8c6e2a-1f3d-4c5e-9a7b-1234567890ab"
    identity = Identity(
        cgroup=f"kubepods/burstable/pod{uid}/{'a' * 64}",
        kubernetes=True,
        pod_uid=uid,
        pod_namespace="shop",
        pod_name="web-0",
        container_name="nginx",
    )
    metrics.set_cgroup_pressure([CgroupPressure(identity, 23.9), pressure(CGROUP, 4.5)])

    assert samples(metrics)["remediator_cgroup_full_pressure_avg10"] == {
        (
            ("cgroup", identity.cgroup),
            ("container", "nginx"),
            ("namespace", "shop"),
            ("pod", "web-0"),
            ("pod_uid", uid),
        ): 23.9,
        (("cgroup", CGROUP), ("container", ""), ("namespace", ""), ("pod", ""), ("pod_uid", "")): 4.5,
    }


def test_the_cgroup_series_are_capped_keeping_the_most_pressured_and_counting_the_rest() -> None:
    metrics = Metrics(max_cgroup_series=200)
    entries = [pressure(f"system.slice/s{i}.service", i / 10) for i in range(250)]

    metrics.set_cgroup_pressure(entries)
    kept = samples(metrics)["remediator_cgroup_full_pressure_avg10"]

    assert len(kept) == 200
    assert min(kept.values()) == 5.0, "the least pressured are the ones left out"
    assert value(metrics, "remediator_cgroup_series_dropped_total") == 50
    metrics.set_cgroup_pressure(entries[:10])
    assert len(samples(metrics)["remediator_cgroup_full_pressure_avg10"]) == 10
    assert value(metrics, "remediator_cgroup_series_dropped_total") == 50


def test_hostile_label_values_are_escaped_and_stay_one_series() -> None:
    metrics = Metrics()
    nasty = 'system.slice/a"b\\c\nd} 1\nremediator_dry_run 7\udcff.service'
    metrics.set_cgroup_pressure([pressure(nasty, 1.0)])
    metrics.observe(record(RecordType.PRESSURE_CONFIRMED, policy='we"b\n'))

    found = samples(metrics)
    assert len(found["remediator_cgroup_full_pressure_avg10"]) == 1
    assert value(metrics, "remediator_dry_run") == 0
    (labels,) = found["remediator_cgroup_full_pressure_avg10"]
    assert dict(labels)["cgroup"].startswith('system.slice/a"b\\c\nd} 1\nremediator_dry_run 7')


def test_a_write_is_due_at_most_once_per_interval() -> None:
    metrics = Metrics(interval_sec=15.0)

    assert metrics.next_due_at() is None
    assert metrics.due(100.0)
    assert metrics.next_due_at() == 115.0
    assert not metrics.due(100.0)
    assert not metrics.due(114.9)
    assert metrics.due(115.0)
    assert not metrics.due(120.0)


def test_the_textfile_is_replaced_atomically_and_readable_by_node_exporter(tmp_path: Path) -> None:
    path = tmp_path / "remediator.prom"
    path.write_text("old content\n")
    inode_before = path.stat().st_ino
    metrics = Metrics()
    metrics.observe(record(RecordType.PRESSURE_CONFIRMED))

    old_umask = os.umask(0o077)
    try:
        metrics.write_textfile(path)
    finally:
        os.umask(old_umask)

    assert path.stat().st_ino != inode_before, "a new file renamed over the old one, not rewritten in place"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == metrics.render()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["remediator.prom"], "no temporary file left"


def test_a_failed_write_leaves_the_old_file_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "remediator.prom"
    metrics = Metrics()

    with pytest.raises(MetricsWriteError, match="missing-dir"):
        metrics.write_textfile(path)

    good = tmp_path / "remediator.prom"
    metrics.write_textfile(good)
    assert value(metrics, "remediator_textfile_write_failures_total") == 1


def test_a_symlinked_textfile_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "textfile").symlink_to(real)

    with pytest.raises(MetricsWriteError):
        Metrics().write_textfile(tmp_path / "textfile" / "remediator.prom")
    assert list(real.iterdir()) == []


def test_a_planted_link_at_the_file_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (tmp_path / "remediator.prom").symlink_to(victim)

    Metrics().write_textfile(tmp_path / "remediator.prom")

    assert victim.read_text() == "keep me\n"
    assert not (tmp_path / "remediator.prom").is_symlink()


def test_every_family_has_help_and_a_type() -> None:
    metrics = Metrics()
    metrics.reload_succeeded(1.0)
    names: List[str] = []
    for family in text_string_to_metric_families(metrics.render().decode("utf-8")):
        assert family.documentation, family.name
        assert family.type in ("counter", "gauge", "info"), family.name
        assert family.name.startswith("remediator_")
        names.append(family.name)
    assert "remediator_reload_failures" in names
