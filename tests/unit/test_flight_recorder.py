"""The flight recorder (issue 15 item 3): what it keeps (memory cap, window), when it writes, the disk
caps (oldest first), and that what it writes replays with ``remediator replay``."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import pytest

from remediator.clock import FakeClock
from remediator.commands.replay import run_replay
from remediator.daemon.flight_recorder import (
    INCIDENT_SUFFIX,
    FlightRecorder,
    _encode,
    incidents_directory,
    slug,
)
from remediator.kernel.capabilities import Capabilities, probe
from remediator.kernel.psi_trigger import TriggerCheck
from remediator.readings import CgroupSnapshot, MemoryEvents
from remediator.records import Record, RecordType
from remediator.settings import Settings, load_settings
from remediator.trace.format import CgroupSample, TraceSource, TriggerFired
from remediator.trace.reader import read_trace
from tests.fakefs import FakeKernel
from tests.replay_traces import SEED, SeedScript, cgroup_snapshot, node_snapshot

POLICY = """\
target: {kind: cgroups, include: ["system.slice/*.service"]}
trigger: {pressure: full, stall_ms: 100, window_ms: 2000}
actions:
  - {kind: reclaim, fraction: 0.5, cooldown_sec: 2}
  - {kind: memory_high, relative_to: max, fraction: 0.9}
verify_sec: 2
"""


def capabilities(tmp_path: Path) -> Capabilities:
    kernel = FakeKernel(tmp_path / "k")
    return probe(kernel.roots, trigger_checker=lambda _path, _spec: TriggerCheck(True, ""))


def recorder(tmp_path: Path, clock: FakeClock, **overrides: object) -> FlightRecorder:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings = Settings(state_file=state_dir / "state.json", policies_dir=tmp_path / "policies.d")
    made = FlightRecorder.from_settings(settings, clock, capabilities(tmp_path))
    for key, value in overrides.items():
        setattr(made, key, value)
    return made


def snapshot(total_us: int, oom_kills: int = 0, cgroup: str = SEED) -> CgroupSnapshot:
    base = cgroup_snapshot(SeedScript([0], cgroup=cgroup), total_us, 0, None)
    return replace(base, events=MemoryEvents(max=3, oom_kill=oom_kills))


def look(rec: FlightRecorder, clock: FakeClock, total_us: int, *, fired: bool = True, pressured: bool = True,
         cgroup: str = SEED, oom_kills: int = 0, step: float = 1.0) -> Optional[Record]:  # fmt: skip
    clock.advance(step)
    return rec.observed(
        "test", cgroup, snapshot(total_us, oom_kills, cgroup), node_snapshot(), fired, pressured
    )


def exhausted(cgroup: str = SEED) -> Record:
    return Record(RecordType.ACTION_DECLINED, "ladder exhausted", policy="test", cgroup=cgroup,
                  result="declined", extra={"REASON_KEY": "ladder_exhausted"})  # fmt: skip


def incident_files(rec: FlightRecorder) -> List[str]:
    return sorted(p.name for p in rec.directory.iterdir() if p.name.endswith(INCIDENT_SUFFIX))


def test_a_pressured_targets_looks_are_kept_for_the_window_and_within_the_memory_cap(tmp_path: Path) -> None:
    clock = FakeClock(start=5000.0)
    rec = recorder(tmp_path, clock, window_sec=60.0)
    for k in range(200):
        look(rec, clock, 1000 * k)
    buffer = rec._buffers[SEED]
    # 60 s of looks one second apart, plus the newest one before the window (the replay's baseline).
    assert len(buffer.looks) == 61 and buffer.looks[0].at == clock.monotonic() - 60
    one_look = len(buffer.looks[-1].cgroup or b"")
    capped = recorder(
        tmp_path / "b", FakeClock(start=5000.0), window_sec=600.0, target_buffer_bytes=20 * one_look
    )
    for k in range(200):
        look(capped, capped.clock, 1000 * k)  # type: ignore[arg-type]
    kept = capped._buffers[SEED]
    assert kept.size <= 20 * one_look and len(kept.looks) == 20
    assert kept.looks[-1].at == capped.clock.monotonic()  # the oldest went first
    assert capped.memory_bytes() <= 20 * one_look + capped.node_buffer_bytes


def test_a_target_without_pressure_in_the_window_keeps_only_its_last_look(tmp_path: Path) -> None:
    clock = FakeClock(start=5000.0)
    rec = recorder(tmp_path, clock, window_sec=60.0)
    look(rec, clock, 0, fired=True)
    for _ in range(100):
        look(rec, clock, 0, fired=False, pressured=False)
    assert len(rec._buffers[SEED].looks) == 1
    assert rec.noticed(exhausted()) is not None  # still something to write: its last look


def test_a_ladder_exhausted_writes_the_window_with_a_record_naming_the_file(tmp_path: Path) -> None:
    clock = FakeClock(start=5000.0)
    rec = recorder(tmp_path, clock)
    look(rec, clock, 0, fired=False, pressured=False)
    for k in range(1, 8):
        look(rec, clock, 150_000 * k, step=2.0)
    record = rec.noticed(exhausted())
    assert record is not None and record.type is RecordType.INCIDENT_RECORDED
    assert record.result == "written" and record.extra["INCIDENT_REASON"] == "ladder_exhausted"
    path = Path(record.extra["INCIDENT_FILE"])
    assert path.parent == incidents_directory(tmp_path / "state")
    assert path.name.endswith("-system.slice-seed.service.trace.gz") and str(path) in record.message
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    header, items, truncation = read_trace(path)
    assert truncation is None and header.source is TraceSource.FLIGHT_RECORDER
    assert len([i for i in items if isinstance(i, CgroupSample)]) == 8
    assert len([i for i in items if isinstance(i, TriggerFired)]) == 7
    # The same reason within the window again: in the file already, nothing new.
    assert rec.noticed(exhausted()) is None


def test_backed_off_and_a_rising_oom_kill_are_incidents_too(tmp_path: Path) -> None:
    clock = FakeClock(start=5000.0)
    rec = recorder(tmp_path, clock)
    assert look(rec, clock, 100_000, oom_kills=2) is None  # the first look only learns the count
    assert look(rec, clock, 200_000, oom_kills=2) is None
    oom = look(rec, clock, 300_000, oom_kills=3)
    assert oom is not None and oom.extra["INCIDENT_REASON"] == "oom_kill"
    backed = rec.noticed(Record(RecordType.BACKED_OFF, "restore memory.high", policy="test", cgroup=SEED))
    assert backed is not None and backed.extra["INCIDENT_REASON"] == "backed_off"
    assert len(incident_files(rec)) == 2


def test_disk_use_is_capped_and_the_oldest_incident_goes_first(tmp_path: Path) -> None:
    clock = FakeClock(start=5000.0)
    rec = recorder(tmp_path, clock, max_files=3)
    names = []
    for n in range(5):
        cgroup = f"system.slice/app{n}.service"
        look(rec, clock, 200_000, cgroup=cgroup)
        record = rec.noticed(exhausted(cgroup))
        assert record is not None and record.result == "written", record
        names.append(Path(record.extra["INCIDENT_FILE"]).name)
        os.utime(rec.directory / names[-1], (clock.wall(), clock.wall()))
    assert incident_files(rec) == sorted(names[2:])
    assert record is not None and record.extra["INCIDENTS_REMOVED"] == "1"
    # The byte cap: room for one file only leaves the newest.
    rec.max_files, rec.max_bytes = 100, 1
    look(rec, clock, 300_000, cgroup="system.slice/last.service")
    last = rec.noticed(exhausted("system.slice/last.service"))
    assert last is not None and incident_files(rec) == [Path(last.extra["INCIDENT_FILE"]).name]


def test_the_written_incident_replays_with_remediator_replay(tmp_path: Path) -> None:
    clock = FakeClock(start=5000.0)
    rec = recorder(tmp_path, clock)
    look(rec, clock, 0, fired=False, pressured=False)
    for k in range(1, 10):
        look(rec, clock, 300_000 * k, step=2.0)
    record = rec.noticed(exhausted())
    assert record is not None
    policies = tmp_path / "replay-policies"
    policies.mkdir()
    (policies / "test.yaml").write_text(POLICY)
    settings = load_settings(None, False, {"policies_dir": policies}, environ={})
    out, err = io.StringIO(), io.StringIO()
    assert run_replay(settings, Path(record.extra["INCIDENT_FILE"]), False, out, err) == 0, err.getvalue()
    text = out.getvalue()
    assert "PSI triggers: " in text and "would reclaim" in text
    assert f"would set memory.high of {SEED}" in text


def test_a_directory_someone_else_could_write_is_refused_with_a_failed_record(tmp_path: Path) -> None:
    clock = FakeClock(start=5000.0)
    rec = recorder(tmp_path, clock)
    rec.directory.mkdir(mode=0o700)
    rec.directory.chmod(0o777)
    look(rec, clock, 200_000)
    record = rec.noticed(exhausted())
    assert record is not None and record.result == "failed" and record.errno == "EPERM"
    assert incident_files(rec) == []


def test_switched_off_it_keeps_and_writes_nothing(tmp_path: Path) -> None:
    clock = FakeClock(start=5000.0)
    rec = recorder(tmp_path, clock, window_sec=0.0)
    assert look(rec, clock, 200_000, oom_kills=1) is None and rec.noticed(exhausted()) is None
    assert rec.memory_bytes() == 0 and not rec.directory.exists()


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [(None, "node"), ("system.slice/a.service", "system.slice-a.service"), ("x/../y z", "x-..-y_z")],
)
def test_slug(cgroup: Optional[str], expected: str) -> None:
    assert slug(cgroup) == expected


def test_a_look_costs_what_the_docs_say_on_the_real_kernel_fixture() -> None:
    # README and the module docstring: about 0.8 KB per cgroup look, 0.2 KB per node look.
    from remediator.trace.format import NodeSample, cgroup_fields, node_fields

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "traces" / "seed-dry-run.trace.gz"
    _, items, _ = read_trace(fixture)
    cgroup_sizes = [len(_encode(cgroup_fields(i.snapshot))) for i in items if isinstance(i, CgroupSample)]
    node_sizes = [len(_encode(node_fields(i.snapshot))) for i in items if isinstance(i, NodeSample)]
    assert 600 < max(cgroup_sizes) <= 850 and max(node_sizes) <= 250


def test_the_service_writes_an_incident_when_the_ladder_is_exhausted_in_dry_run_too(tmp_path: Path) -> None:
    from tests.unit.test_service import SEED as SERVICE_SEED
    from tests.unit.test_service import Rig, _pressure_episode

    rig = Rig(tmp_path, dry_run=True)
    service = rig.service
    service.flight_recorder = FlightRecorder.from_settings(service.settings, rig.clock, service.capabilities)
    service.start()
    try:
        _pressure_episode(rig)
    finally:
        service.watcher.close()
        rig.triggers.close()
    (incident,) = rig.of(RecordType.INCIDENT_RECORDED)
    assert incident.cgroup == SERVICE_SEED and incident.extra["INCIDENT_REASON"] == "ladder_exhausted"
    assert incident.dry_run and incident.result == "written"
    header, items, _ = read_trace(Path(incident.extra["INCIDENT_FILE"]))
    assert header.source is TraceSource.FLIGHT_RECORDER
    # Every look of the episode up to the exhaustion, the trigger event among them.
    assert len([i for i in items if isinstance(i, CgroupSample)]) >= 3
    assert [i.cgroup for i in items if isinstance(i, TriggerFired)] == [SERVICE_SEED]
