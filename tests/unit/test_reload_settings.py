"""A reload applies every settings key, or refuses it by name and keeps the running value (issue 11 item 5).

The table below must name every key of ``Settings``: a new setting fails this test until someone
decides whether a reload applies it (and makes it so) or refuses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from remediator.daemon.flight_recorder import FlightRecorder
from remediator.daemon.service_records import RESTART_ONLY
from remediator.records import RecordType
from remediator.settings import Settings
from tests.unit.test_service_metrics import MetricsRig


def _other_dir(rig: MetricsRig) -> Path:
    return rig.pods_log_dir.parent / "other-pods"


# key -> (a different valid value given the running settings and the rig)
NEW_VALUE: Dict[str, Callable[[Settings, MetricsRig], Any]] = {
    "dry_run": lambda s, _r: not s.dry_run,
    "policies_dir": lambda s, _r: s.policies_dir,  # the same directory: a reload re-reads it anyway
    "state_file": lambda s, _r: s.state_file.parent / "other-state.json",
    "data_dir": lambda s, _r: s.state_file.parent / "other-data",
    "cgroup_root": lambda s, _r: s.cgroup_root.parent / "other-cgroup",
    "proc_root": lambda s, _r: s.proc_root.parent / "other-proc",
    "rescan_interval_sec": lambda s, _r: s.rescan_interval_sec + 7,
    "sampling_interval_sec": lambda s, _r: s.sampling_interval_sec + 3,
    "node_actions_max_per_hour": lambda s, _r: s.node_actions_max_per_hour + 1,
    "log_target": lambda s, _r: "json" if s.log_target != "json" else "stderr",
    "write_retry_budget_sec": lambda s, _r: s.write_retry_budget_sec + 1,
    "metrics_textfile": lambda s, _r: None,
    "metrics_interval_sec": lambda s, _r: s.metrics_interval_sec + 30,
    "metrics_max_cgroup_series": lambda s, _r: s.metrics_max_cgroup_series + 1,
    "pods_log_dir": lambda _s, r: _other_dir(r),
    "flight_recorder_minutes": lambda s, _r: s.flight_recorder_minutes + 5,
    "incidents_max_files": lambda s, _r: s.incidents_max_files + 1,
    "incidents_max_bytes": lambda s, _r: s.incidents_max_bytes * 2,
    "insecure_allow_untrusted_files": lambda s, _r: s.insecure_allow_untrusted_files,
}

# How an applied key shows in the running service beyond its settings (components built from it).
EFFECT: Dict[str, Callable[[MetricsRig], Any]] = {
    "metrics_textfile": lambda r: r.service.metrics.path if r.service.metrics is not None else "no metrics",
    "pods_log_dir": lambda r: (
        r.service.identities.index._pods_dir if r.service.identities is not None else None
    ),
    "flight_recorder_minutes": lambda r: (
        r.service.flight_recorder.window_sec / 60 if r.service.flight_recorder is not None else None
    ),
    "incidents_max_files": lambda r: (
        r.service.flight_recorder.max_files if r.service.flight_recorder else None
    ),
    "incidents_max_bytes": lambda r: (
        r.service.flight_recorder.max_bytes if r.service.flight_recorder else None
    ),
}


def test_the_table_names_every_settings_key() -> None:
    assert set(NEW_VALUE) == set(Settings.model_fields)
    assert set(RESTART_ONLY) <= set(Settings.model_fields)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[MetricsRig]:
    directory = tmp_path / "node-exporter"
    directory.mkdir()
    rig = MetricsRig(tmp_path, dry_run=False, textfile=directory / "remediator.prom")
    service = rig.service
    service.flight_recorder = FlightRecorder.from_settings(service.settings, rig.clock, service.capabilities)
    yield rig
    rig.service.watcher.close()
    rig.triggers.close()


@pytest.mark.parametrize("key", sorted(Settings.model_fields))
def test_a_reload_applies_the_key_or_refuses_it_by_name(rig: MetricsRig, key: str) -> None:
    running = rig.service.settings
    new_value = NEW_VALUE[key](running, rig)
    reloaded = running.model_copy(update={key: new_value})
    rig.service.reload_settings = lambda: reloaded
    rig.service.start()
    rig.service.reload()

    refusals = [
        r
        for r in rig.writer.records
        if r.type is RecordType.POLICY_REJECTED and "only on restart" in r.message
    ]
    if key in RESTART_ONLY and new_value != getattr(running, key):
        [refused] = refusals
        assert refused.extra["SETTINGS"] == key and refused.message.startswith(key)
        assert getattr(rig.service.settings, key) == getattr(running, key)
    else:
        assert refusals == []
        assert getattr(rig.service.settings, key) == new_value
        if key in EFFECT:
            assert EFFECT[key](rig) == new_value
    assert [r.type for r in rig.writer.records][-1] is RecordType.DAEMON_RELOADED
