"""Reaction-time fields on the records of a fired observation (bench/cost measures with them).

WOKEN/DECIDED/WRITTEN_MONOTONIC_US say when the loop woke for a trigger event,
when the core had decided and when the executor had finished each write, so a
benchmark can split the path from the kernel's event to the record without
instrumenting the daemon from outside. Timed looks carry them too: the re-check
after an unconfirmed event is a reaction to that event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from remediator.clock import FakeClock
from remediator.daemon.executor import Executor
from remediator.daemon.journal import CapturingWriter
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.notify import Notifier
from remediator.daemon.service import DECIDED_FIELD, WOKEN_FIELD, WRITTEN_FIELD, Service
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Watcher
from remediator.kernel.capabilities import probe
from remediator.kernel.psi_trigger import TriggerCheck
from remediator.kernel.roots import KernelRoots
from remediator.kernel.snapshot import read_cgroup_snapshot
from remediator.readings import CgroupSnapshot
from remediator.records import Record, RecordType
from remediator.settings import load_settings
from tests.fake_triggers import FakeTriggers
from tests.fakefs import SEED_PRESSURE, FakeKernel

SEED = "system.slice/seed.service"
SEED_FULL_TOTAL = 45112887
POLICY = """\
target: {kind: cgroups, include: ["system.slice/*.service"]}
trigger: {pressure: full, stall_ms: 100, window_ms: 2000}
actions:
  - kind: reclaim
verify_sec: 10
"""


class _Rig:
    def __init__(self, base: Path) -> None:
        self.kernel = FakeKernel(base / "kernel")
        self.kernel.add_seed(SEED)
        policies = base / "policies.d"
        policies.mkdir()
        (policies / "seed.yaml").write_text(POLICY)
        settings = load_settings(
            None,
            False,
            {
                "cgroup_root": self.kernel.cgroup_root,
                "proc_root": self.kernel.proc_root,
                "policies_dir": policies,
                "state_file": base / "run" / "state.json",
                "log_target": "stderr",
            },
            environ={},
        )
        self.clock = FakeClock()
        self.triggers = FakeTriggers(self.kernel.roots)
        self.writer = CapturingWriter()
        roots = self.kernel.roots
        self.service = Service(
            settings=settings,
            clock=self.clock,
            writer=self.writer,
            notifier=Notifier(environ={}),
            executor=Executor(KernelFiles.under(roots), StateStore(settings.state_file), self.clock),
            watcher=Watcher(
                roots,
                self.clock,
                settings.sampling_interval_sec,
                arm=self.triggers.arm,
                poll_factory=self.triggers.poll_factory,
            ),
            capabilities=probe(roots, trigger_checker=lambda _p, _s: TriggerCheck(True, "", None)),
        )

    def stall(self, micros: int) -> None:
        total = SEED_FULL_TOTAL + micros
        self.kernel.set_pressure(SEED, SEED_PRESSURE.replace(f"total={SEED_FULL_TOTAL}", f"total={total}"))

    def of(self, kind: RecordType) -> list[Record]:
        return [r for r in self.writer.records if r.type == kind]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[_Rig]:
    rig = _Rig(tmp_path)
    rig.service.start()
    yield rig
    rig.service.watcher.close()
    rig.triggers.close()


def _us(clock: FakeClock) -> str:
    return str(int(clock.monotonic() * 1_000_000))


def test_records_of_a_fired_observation_carry_wake_decision_and_write_times(rig: _Rig) -> None:
    rig.stall(500_000)
    rig.triggers.fire(SEED)
    rig.clock.advance(2)
    rig.service.step()

    (confirmed,) = rig.of(RecordType.PRESSURE_CONFIRMED)
    (applied,) = rig.of(RecordType.ACTION_APPLIED)
    now = _us(rig.clock)
    assert confirmed.extra[WOKEN_FIELD] == now
    assert confirmed.extra[DECIDED_FIELD] == now
    assert WRITTEN_FIELD not in confirmed.extra
    assert applied.action == "reclaim"
    assert applied.extra[WOKEN_FIELD] == now
    assert applied.extra[DECIDED_FIELD] == now
    assert applied.extra[WRITTEN_FIELD] == now
    # The action's own fields are kept beside them.
    assert applied.extra["RUNG"] == "0"


def test_records_of_timed_observations_carry_the_times_of_their_own_wake_up(rig: _Rig) -> None:
    rig.stall(500_000)
    rig.triggers.fire(SEED)
    rig.clock.advance(2)
    rig.service.step()
    fired_records = len(rig.writer.records)
    # Pressure goes on; the verify-time re-check is a timed observation.
    rig.stall(5_000_000)
    rig.clock.advance(10)
    rig.service.step()

    later = rig.writer.records[fired_records:]
    assert later, "the verify-time re-check should have produced records"
    now = str(int(rig.clock.monotonic() * 1_000_000))
    assert all(r.extra[WOKEN_FIELD] == now for r in later)


def test_a_rungs_verify_time_counts_from_the_look_not_from_when_reading_it_finished(
    rig: _Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow read (a loaded or emulated host) must not move the verify look: it is due verify_sec
    after what the kernel showed, so a second event exactly one verify_sec later is judged there."""

    def slow_read(roots: KernelRoots, cgroup: str) -> CgroupSnapshot:
        rig.clock.advance(0.3)
        return read_cgroup_snapshot(roots, cgroup)

    monkeypatch.setattr("remediator.daemon.service.read_cgroup_snapshot", slow_read)
    rig.stall(500_000)
    rig.triggers.fire(SEED)
    rig.clock.advance(2)
    looked_at = rig.clock.monotonic()
    rig.service.step()

    (applied,) = rig.of(RecordType.ACTION_APPLIED)
    assert int(applied.extra[DECIDED_FIELD]) == int((looked_at + 0.3) * 1_000_000)
    (target,) = rig.service.state.targets.values()
    assert target.rung is not None
    assert target.rung.taken_at == looked_at
    assert rig.service.wakeups[next(iter(rig.service.state.targets))] == looked_at + 10
