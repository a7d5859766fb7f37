"""The daemon loop end to end on a fake kernel: fake cgroupfs, fake clock, scripted triggers.

The seed's cgroup under pressure must get, in order: a reclaim of half its clean
cache, then (pressure not falling) memory.high at 90 % of memory.max, then after
the calm the original memory.high back; dry-run must produce the same records
and change no file; a crash must leave nothing clamped after the next start.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

from remediator.clock import FakeClock
from remediator.daemon.journal import CapturingWriter
from remediator.daemon.notify import Notifier
from remediator.daemon.run import build_executor
from remediator.daemon.service import Service
from remediator.daemon.watcher import Watcher
from remediator.kernel.capabilities import probe
from remediator.kernel.psi_trigger import TriggerCheck
from remediator.records import Knob, Record, RecordType
from remediator.settings import Settings, load_settings
from tests.fake_triggers import FakeTriggers
from tests.fakefs import SEED_PRESSURE, FakeKernel

SEED = "system.slice/seed.service"
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
MAX = 4294967296
SEED_FULL_TOTAL = 45112887


class Rig:
    """A service wired to a fake kernel, a fake clock and scripted triggers."""

    def __init__(self, base: Path, *, dry_run: bool, policies: Path = REPO_POLICIES) -> None:
        self.kernel = FakeKernel(base / "kernel")
        self.kernel.add_seed(SEED)
        self.state_file = base / "run" / "state.json"
        self.policies_dir = base / "policies.d"
        if not self.policies_dir.exists():
            shutil.copytree(policies, self.policies_dir)
        self.full_total = SEED_FULL_TOTAL
        self.clock = FakeClock()
        self.dry_run = dry_run
        self.triggers = FakeTriggers(self.kernel.roots)
        self.writer = CapturingWriter()
        self.service = self._build()

    def _build(self) -> Service:
        settings = load_settings(
            None,
            False,
            {
                "dry_run": self.dry_run,
                "cgroup_root": self.kernel.cgroup_root,
                "proc_root": self.kernel.proc_root,
                "policies_dir": self.policies_dir,
                "state_file": self.state_file,
                "log_target": "stderr",
            },
            environ={},
        )
        roots = self.kernel.roots
        executor = build_executor(settings, self.clock)  # the daemon's one choice of mode
        watcher = Watcher(roots, self.clock, settings.sampling_interval_sec, arm=self.triggers.arm,
                          poll_factory=self.triggers.poll_factory)  # fmt: skip
        caps = probe(roots, trigger_checker=lambda _p, _s: TriggerCheck(True, "", None))
        return Service(settings=settings, clock=self.clock, writer=self.writer, notifier=Notifier(environ={}),
                       executor=executor, watcher=watcher, capabilities=caps)  # fmt: skip

    def restart(self) -> None:
        """A new daemon process on the same kernel and state file (after a crash: no shutdown)."""
        self.triggers = FakeTriggers(self.kernel.roots)
        self.service = self._build()
        self.service.start()

    def stall(self, micros: int) -> None:
        """Add full stall time to the seed cgroup's pressure file."""
        self.full_total += micros
        self.kernel.set_pressure(
            SEED, SEED_PRESSURE.replace(f"total={SEED_FULL_TOTAL}", f"total={self.full_total}")
        )

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.service.step()

    def types(self) -> List[RecordType]:
        return [r.type for r in self.writer.records]

    def of(self, kind: RecordType) -> List[Record]:
        return [r for r in self.writer.records if r.type == kind]

    def memory_high(self) -> str:
        return self.kernel.read_file(SEED, "memory.high").strip()


@pytest.fixture
def enforcing(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, dry_run=False)
    rig.service.start()
    yield rig
    rig.service.watcher.close()
    rig.triggers.close()


def _pressure_episode(rig: Rig) -> None:
    """A trigger event with real stall behind it, then pressure that does not fall."""
    rig.stall(500_000)
    rig.triggers.fire(SEED)
    rig.advance(2)
    # Pressure goes on through the verification time: 20 % full stall.
    for _ in range(5):
        rig.stall(400_000)
        rig.advance(2)


def test_start_arms_a_trigger_per_selected_cgroup_and_the_node(enforcing: Rig) -> None:
    assert len(enforcing.triggers.live(SEED)) == 1
    assert len(enforcing.triggers.live(None)) == 1  # node.yaml
    assert enforcing.types()[0] == RecordType.DAEMON_STARTED
    assert {r.policy for r in enforcing.of(RecordType.POLICY_LOADED)} == {
        "services-cache", "node", "node-drop-caches"
    }  # fmt: skip


def test_seed_pressure_reclaims_the_clean_cache_then_sets_memory_high(enforcing: Rig) -> None:
    _pressure_episode(enforcing)
    applied = enforcing.of(RecordType.ACTION_APPLIED)
    # Then reclaim again as the pressure goes on (services-cache: cooldown 2 s, verify 2 s).
    assert [r.action for r in applied][:2] == ["reclaim", "memory_high"]
    reclaim, high = applied[:2]
    assert reclaim.result in ("applied", "partial")
    assert reclaim.dry_run is False
    # All of the 2387432448 bytes of clean cache (services-cache: fraction 1.0), page-aligned down.
    assert reclaim.extra["RECLAIM_ASKED_BYTES"] == "2387431424"
    assert reclaim.extra["RECLAIM_COMPLETED_BYTES"] == "2387431424"
    assert "reclaim 2.2 GiB of clean page cache" in reclaim.message
    expected_high = (int(MAX * 0.9) // 4096) * 4096
    assert enforcing.memory_high() == str(expected_high)
    assert high.before == "max"
    assert high.after == str(expected_high)
    assert RecordType.ESCALATED in enforcing.types()
    assert enforcing.types().index(RecordType.PRESSURE_CONFIRMED) < enforcing.types().index(
        RecordType.ACTION_APPLIED
    )
    # The original was on disk before the write.
    assert enforcing.state_file.exists()
    assert '"max"' in enforcing.state_file.read_text()


def test_memory_high_is_restored_after_the_calm_period(enforcing: Rig) -> None:
    _pressure_episode(enforcing)
    assert enforcing.memory_high() != "max"
    # Calm: no more stall. Nothing restored before calm_sec (300 s) has passed.
    for _ in range(28):
        enforcing.advance(10)
    assert enforcing.memory_high() != "max"
    for _ in range(5):
        enforcing.advance(10)
    assert enforcing.memory_high() == "max"
    (rolled,) = enforcing.of(RecordType.ROLLED_BACK)
    assert rolled.result == "restored"
    assert rolled.after == "max"


def test_a_crash_leaves_nothing_clamped_after_the_next_start(enforcing: Rig) -> None:
    _pressure_episode(enforcing)
    assert enforcing.memory_high() != "max"
    enforcing.service.watcher.close()  # the process died: no shutdown, no restore
    enforcing.restart()
    assert enforcing.memory_high() == "max"
    recovered = enforcing.of(RecordType.STATE_RECOVERED)
    assert recovered and recovered[-1].cgroup == SEED


def test_clean_shutdown_restores_memory_high(enforcing: Rig) -> None:
    _pressure_episode(enforcing)
    enforcing.service.shutdown()
    assert enforcing.memory_high() == "max"
    assert enforcing.types()[-1] == RecordType.DAEMON_STOPPING


def test_dry_run_writes_nothing_and_records_the_same_decisions(tmp_path: Path) -> None:
    enforcing = Rig(tmp_path / "enforce", dry_run=False)
    enforcing.service.start()
    _pressure_episode(enforcing)

    dry = Rig(tmp_path / "dry", dry_run=True)
    before = dry.kernel.snapshot_files()
    dry.service.start()
    _pressure_episode(dry)
    dry.stall(0)  # rewrite the pressure file as the test itself changed it
    after = dry.kernel.snapshot_files()
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {f"cgroup/{SEED}/memory.pressure"}  # only what the test wrote
    assert not dry.state_file.exists()

    def decisions(rig: Rig) -> List[tuple[RecordType, Optional[Knob], Optional[str]]]:
        return [
            (r.type, r.action, r.cgroup) for r in rig.writer.records if r.type != RecordType.DAEMON_STARTED
        ]

    assert decisions(dry) == decisions(enforcing)
    would = dry.of(RecordType.ACTION_APPLIED)
    assert would and [r.result for r in would] == ["would"] * len(would)
    assert all(r.dry_run for r in dry.writer.records)
    assert all("would" in r.message for r in would)


def test_a_removed_cgroup_is_forgotten_without_error_records(enforcing: Rig) -> None:
    enforcing.triggers.remove_cgroup(SEED)
    shutil.rmtree(enforcing.kernel.cgroup_root / SEED)
    enforcing.advance(1)
    ended = enforcing.of(RecordType.WATCH_ENDED)
    assert [r.cgroup for r in ended] == [SEED]
    assert not enforcing.of(RecordType.ACTION_FAILED)
    # No spin: the next wait is a plain timeout.
    enforcing.advance(1)
    assert len(enforcing.of(RecordType.WATCH_ENDED)) == 1


def test_a_cgroup_gone_while_being_armed_gets_no_watch_ended_without_a_start(enforcing: Rig) -> None:
    import errno

    enforcing.kernel.add_cgroup("system.slice/brief.service", current=1 << 20, max_bytes=1 << 30)
    enforcing.triggers.refuse("system.slice/brief.service", errno.ENODEV)  # rmdir'ed meanwhile
    enforcing.advance(enforcing.service.settings.rescan_interval_sec)
    brief = [r for r in enforcing.writer.records if r.cgroup == "system.slice/brief.service"]
    assert brief == []
    assert not enforcing.of(RecordType.ACTION_FAILED)


def test_a_cgroup_created_just_after_a_slow_rescan_is_watched_within_the_rescan_interval(
    enforcing: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import remediator.daemon.service as service_module
    from remediator.daemon.discovery import desired_targets as real_walk

    def slow_walk(*args: Any, **kwargs: Any) -> Any:
        enforcing.clock.advance(3.0)  # a large tree (measured: 1.6 s at 2000 cgroups under TCG)
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(service_module, "desired_targets", slow_walk)
    interval = enforcing.service.settings.rescan_interval_sec
    enforcing.advance(interval)  # a rescan from 10 s to 13 s
    enforcing.kernel.add_cgroup("system.slice/late.service", current=1 << 20, max_bytes=1 << 30)
    enforcing.advance(interval - 6.0)  # 17 s: the next rescan started early by the last one's 3 s
    assert len(enforcing.triggers.live("system.slice/late.service")) == 1  # watched at 20 s: 7 s after


def test_a_new_cgroup_is_watched_by_the_next_rescan(enforcing: Rig) -> None:
    enforcing.kernel.add_cgroup("system.slice/new.service", current=1 << 20, max_bytes=1 << 30)
    enforcing.advance(enforcing.service.settings.rescan_interval_sec)
    assert len(enforcing.triggers.live("system.slice/new.service")) == 1


def test_refused_triggers_fall_back_to_sampling_and_say_so_once(tmp_path: Path) -> None:
    import errno

    rig = Rig(tmp_path, dry_run=True)
    rig.kernel.add_cgroup("system.slice/other.service", current=1 << 20, max_bytes=1 << 30)
    rig.triggers.refuse_all(errno.EINVAL)
    rig.service.start()
    fallbacks = [r for r in rig.of(RecordType.FALLBACK_SAMPLING) if r.priority is None]
    # One per policy and reason, not one per cgroup.
    assert sorted(r.policy for r in fallbacks) == ["node", "services-cache"]
    assert all(r.errno == "EINVAL" for r in fallbacks)
    # Sampling still sees the seed's pressure and acts on it.
    for _ in range(3):
        rig.stall(1_000_000)
        rig.advance(2)
    assert [r.action for r in rig.of(RecordType.ACTION_APPLIED)][:1] == ["reclaim"]


def test_reload_with_an_invalid_policy_keeps_the_running_set(enforcing: Rig) -> None:
    (enforcing.policies_dir / "broken.yaml").write_text("target: {kind: node}\ntrigger: {pressure: on}\n")
    enforcing.service.request_reload()
    enforcing.advance(0.1)
    rejected = enforcing.of(RecordType.POLICY_REJECTED)
    assert rejected and all("keeping the running policies" in r.message for r in rejected)
    assert any("broken.yaml:2:" in r.message and "pressure" in r.message for r in rejected)
    assert set(enforcing.service.policies) == {"services-cache", "node"}
    assert not enforcing.of(RecordType.DAEMON_RELOADED)
    # And the daemon still acts.
    _pressure_episode(enforcing)
    assert enforcing.of(RecordType.ACTION_APPLIED)


def test_reload_with_valid_policies_swaps_them(enforcing: Rig) -> None:
    (enforcing.policies_dir / "node.yaml").unlink()
    enforcing.service.request_reload()
    enforcing.advance(0.1)
    assert set(enforcing.service.policies) == {"services-cache"}
    assert enforcing.of(RecordType.DAEMON_RELOADED)
    assert enforcing.triggers.live(None) == []


def test_reload_with_invalid_settings_keeps_the_running_ones(enforcing: Rig) -> None:
    from remediator.located.issues import PolicyIssue
    from remediator.settings import SettingsError

    def broken() -> Settings:
        raise SettingsError(
            [PolicyIssue("remediator.yaml", 3, 1, "rescan_interval_sec", "must be <= 300 (got 500)")]
        )

    enforcing.service.reload_settings = broken
    enforcing.service.request_reload()
    enforcing.advance(0.1)
    (rejected,) = enforcing.of(RecordType.POLICY_REJECTED)
    assert "remediator.yaml:3:1: rescan_interval_sec: must be <= 300 (got 500)" in rejected.message
    assert set(enforcing.service.policies) == {"services-cache", "node"}


def test_reload_never_switches_dry_run_on_the_fly(enforcing: Rig) -> None:
    dry = enforcing.service.settings.model_copy(update={"dry_run": True})
    enforcing.service.reload_settings = lambda: dry
    enforcing.service.request_reload()
    enforcing.advance(0.1)
    assert enforcing.service.settings.dry_run is False
    assert any("only on restart" in r.message for r in enforcing.of(RecordType.POLICY_REJECTED))
    assert enforcing.of(RecordType.DAEMON_RELOADED)
