"""Dry-run decided at one point (issue 11 item 3): the overlay, the knobs that do not know, the one choice.

The executor is handed its kernel files once, where it is built: the real ones (``KernelFiles``) or
dry-run's overlay (``DryRunFiles``), which opens nothing for writing and answers a read as the kernel
would after the writes it swallowed. The knobs write through what they are given; the records differ
only in their dry-run flag and, as a reader sees them, in the figures of work that was not done.
"""

from __future__ import annotations

import ast
import errno
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import pytest

import remediator
from remediator.clock import FakeClock
from remediator.daemon import kernel_files
from remediator.daemon.confined_io import (
    CgroupFile,
    ConfinedIO,
    KernelFile,
    PathNotConfined,
    ProcFile,
    WriteNotAllowed,
)
from remediator.daemon.executor import Executor, KnobIO
from remediator.daemon.journal import CapturingWriter, record_fields
from remediator.daemon.kernel_files import DryRunFiles, KernelFiles
from remediator.daemon.notify import Notifier
from remediator.daemon.run import build_executor
from remediator.daemon.service import WRITTEN_FIELD, Service
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Watcher
from remediator.errors import KernelError, KernelFileMissing, kernel_error_from_oserror
from remediator.kernel.capabilities import probe
from remediator.kernel.psi_trigger import TriggerCheck
from remediator.kernel.snapshot import read_cgroup_snapshot, read_node_snapshot
from remediator.knobs import plugins
from remediator.knobs.base import Action, KnobWriter
from remediator.knobs.memory_high import RestoreMemoryHigh, SetMemoryHigh
from remediator.knobs.reclaim import Reclaim
from remediator.knobs.sysctl import RestoreSysctl, SetSysctl
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import DRY_RUN_PREFIX, WORK_FIELDS, Knob, Record, RecordType, presented
from remediator.settings import load_settings
from remediator.sizes import format_bytes
from tests.fake_triggers import FakeTriggers
from tests.fakefs import SEED_PRESSURE, FakeKernel
from tests.unit.test_service_reaction_timing import POLICY, SEED

APP = "system.slice/app.service"
GiB = 1 << 30
MiB = 1 << 20
HIGH = CgroupFile(APP, "memory.high")
PACKAGE = Path(remediator.__file__).parent


class WritesRefused(ConfinedIO):
    """The confined writer with every write an error: whatever reaches it fails the test. The files
    named in ``write_only`` cannot be read, as the kernel's memory.reclaim cannot."""

    def __init__(self, kernel: FakeKernel, write_only: Tuple[str, ...] = ()) -> None:
        super().__init__(kernel.roots)
        self.attempted: List[str] = []
        self.write_only = write_only

    def write(self, target: KernelFile, data: bytes) -> None:
        self.attempted.append(target.describe())
        raise AssertionError(f"dry-run opened {target.describe()} for writing")

    def read(self, target: KernelFile) -> str:
        if target.describe().endswith(self.write_only):
            raise kernel_error_from_oserror(OSError(errno.EACCES, "no read handler"), Path(target.describe()))
        return super().read(target)


def kernel_at(base: Path) -> FakeKernel:
    kernel = FakeKernel(base)
    kernel.add_seed(APP)
    return kernel


# ---------------------------------------------------------------- the overlay


def test_the_overlay_answers_a_read_with_the_value_it_swallowed(tmp_path: Path) -> None:
    kernel = kernel_at(tmp_path)
    files = DryRunFiles(WritesRefused(kernel))
    kernel_value = kernel.read_file(APP, "memory.high")
    before = kernel.snapshot_files()

    files.write(HIGH, str(3 * GiB).encode())
    assert files.read(HIGH) == str(3 * GiB)
    assert files.remembered == 1
    files.write(HIGH, str(2 * GiB).encode())  # a second write lands on the first, as in the kernel
    assert files.read(HIGH) == str(2 * GiB)
    assert files.remembered == 1  # the kernel's own value is still the one beneath
    assert kernel.read_file(APP, "memory.high") == kernel_value
    assert kernel.snapshot_files() == before


def test_the_overlay_gives_way_when_another_writer_changes_the_file(tmp_path: Path) -> None:
    kernel = kernel_at(tmp_path)
    files = DryRunFiles(WritesRefused(kernel))
    original = kernel.read_file(APP, "memory.high")
    files.write(HIGH, str(3 * GiB).encode())
    kernel.set_file(APP, "memory.high", f"{5 * GiB}\n")
    assert files.read(HIGH) == f"{5 * GiB}\n"  # that write came after ours: the kernel holds theirs
    assert files.remembered == 0
    kernel.set_file(APP, "memory.high", original)
    assert files.read(HIGH) == original  # ours is gone for good, as it would be in the kernel


def test_the_real_files_write_to_the_kernel_and_swallow_nothing(tmp_path: Path) -> None:
    kernel = kernel_at(tmp_path)
    files = KernelFiles.under(kernel.roots)
    files.write(HIGH, str(3 * GiB).encode())
    assert kernel.read_file(APP, "memory.high").strip() == str(3 * GiB)
    assert files.read(HIGH).strip() == str(3 * GiB)
    assert (KernelFiles.swallows_writes, DryRunFiles.swallows_writes) == (False, True)


def test_the_overlay_swallows_a_write_to_a_file_it_cannot_read_back(tmp_path: Path) -> None:
    kernel = kernel_at(tmp_path)
    io = WritesRefused(kernel, write_only=("memory.reclaim",))
    files = DryRunFiles(io)
    reclaim = CgroupFile(APP, "memory.reclaim")
    before = kernel.snapshot_files()
    files.write(reclaim, str(64 * MiB).encode())
    assert files.remembered == 0
    with pytest.raises(KernelError):
        files.read(reclaim)  # a write-only file holds nothing to answer, swallowed or not
    assert io.attempted == []
    assert kernel.snapshot_files() == before


def test_the_overlay_refuses_a_write_as_the_real_one_would_and_opens_nothing(tmp_path: Path) -> None:
    kernel = kernel_at(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "memory.high").write_text("max\n")
    high = kernel.cgroup_root / APP / "memory.high"
    high.unlink()
    os.symlink(outside / "memory.high", high)
    io = WritesRefused(kernel)
    files = DryRunFiles(io)

    with pytest.raises(WriteNotAllowed):
        files.write(CgroupFile(APP, "memory.max"), b"1")  # not a file remediator writes
    with pytest.raises(PathNotConfined):
        files.write(HIGH, b"1")  # a planted symlink
    reclaim = kernel.cgroup_root / APP / "memory.reclaim"
    reclaim.unlink()
    os.link(outside / "memory.high", reclaim)
    with pytest.raises(PathNotConfined, match="hard links"):
        files.write(CgroupFile(APP, "memory.reclaim"), b"1")  # a planted hard link
    (kernel.proc_root / "sys" / "vm" / "drop_caches").unlink()
    with pytest.raises(KernelFileMissing):
        files.write(ProcFile("sys/vm/drop_caches"), b"1")
    assert io.attempted == []
    assert (outside / "memory.high").read_text() == "max\n"


def test_the_overlay_answers_a_cgroup_created_again_under_the_name_with_its_own_value(tmp_path: Path) -> None:
    kernel = kernel_at(tmp_path)
    files = DryRunFiles(WritesRefused(kernel))
    original = kernel.read_file(APP, "memory.high")
    files.write(HIGH, str(3 * GiB).encode())
    # The pod went and came back under its name, with the same memory.high as the first had.
    kernel.add_cgroup("replacement.scope", current=GiB, high=None)
    shutil.rmtree(kernel.cgroup_root / APP)
    os.rename(kernel.cgroup_root / "replacement.scope", kernel.cgroup_root / APP)
    kernel.set_file(APP, "memory.high", original)
    assert files.read(HIGH) == original
    assert files.remembered == 0


def test_the_overlay_remembers_only_what_the_kernel_would_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = kernel_at(tmp_path)
    files = DryRunFiles(WritesRefused(kernel, write_only=("memory.reclaim",)))
    original = kernel.read_file(APP, "memory.high")
    files.write(CgroupFile(APP, "memory.reclaim"), str(64 * MiB).encode())
    assert files.remembered == 0  # a write-only file has nothing to answer
    files.write(HIGH, str(3 * GiB).encode())
    files.write(HIGH, original.strip().encode())  # a restore puts the kernel's own value back
    assert files.remembered == 0
    # Past the bound, the writes of cgroups that are gone are forgotten.
    monkeypatch.setattr(kernel_files, "PRUNE_ABOVE", 1)
    gone = ["system.slice/a.service", "system.slice/b.service"]
    for cgroup in gone:
        kernel.add_cgroup(cgroup, current=GiB, high=None)
        files.write(CgroupFile(cgroup, "memory.high"), str(GiB).encode())
    files.write(HIGH, str(3 * GiB).encode())
    assert files.remembered == 3
    for cgroup in gone:
        shutil.rmtree(kernel.cgroup_root / cgroup)
    files.write(CgroupFile(APP, "memory.high"), str(2 * GiB).encode())
    assert files.remembered == 1
    assert files.read(HIGH) == str(2 * GiB)


# ---------------------------------------------------------------- each knob, both modes


def _cause(message: str, cgroup: Optional[str]) -> Record:
    return Record(
        RecordType.ACTION_APPLIED, message, policy="p", cgroup=cgroup, evidence={"SOME_AVG10": "50.00"}
    )


def _actions(knob: Knob) -> Sequence[Action]:
    if knob is Knob.RECLAIM:
        return (Reclaim(APP, 200 * MiB, 5.0, _cause(f"reclaim 200 MiB from {APP}", APP)),)
    if knob is Knob.MEMORY_HIGH:
        return (
            SetMemoryHigh(APP, 3 * GiB, None, _cause(f"set memory.high of {APP} to 3 GiB", APP)),
            SetMemoryHigh(APP, 2 * GiB, 3 * GiB, _cause(f"set memory.high of {APP} to 2 GiB", APP)),
            RestoreMemoryHigh(APP, 2 * GiB, _cause(f"restore memory.high of {APP}", APP)),
        )
    if knob is Knob.VFS_CACHE_PRESSURE:
        return (
            SetSysctl("vfs_cache_pressure", 200, 100, _cause("set vm.vfs_cache_pressure to 200", None)),
            RestoreSysctl("vfs_cache_pressure", 200, _cause("restore vm.vfs_cache_pressure", None)),
        )
    return (SetSysctl("drop_caches", 1, None, _cause("drop clean page cache node-wide", None)),)


def _without_work(extra: Mapping[str, str]) -> Dict[str, str]:
    return {k: v for k, v in extra.items() if k not in WORK_FIELDS}


@pytest.mark.parametrize("knob", list(Knob), ids=str)
def test_a_dry_run_of_each_knob_writes_nothing_and_records_as_enforcing_but_for_the_mode_and_work_figures(
    tmp_path: Path, knob: Knob
) -> None:
    real_kernel = kernel_at(tmp_path / "enforcing")
    dry_kernel = kernel_at(tmp_path / "dry")
    clock = FakeClock()
    real = Executor(KernelFiles.under(real_kernel.roots), StateStore(tmp_path / "e" / "state.json"), clock)
    io = WritesRefused(dry_kernel)
    dry = Executor(DryRunFiles(io), StateStore.read_only(tmp_path / "d" / "state.json"), clock)
    real_before, dry_before = real_kernel.snapshot_files(), dry_kernel.snapshot_files()

    for action in _actions(knob):
        enforced, simulated = real.execute(action), dry.execute(action)
        assert enforced.result in ("applied", "restored"), enforced.records
        assert simulated.result == "would"
        assert len(enforced.records) == len(simulated.records) == 1
        e, d = enforced.records[0], simulated.records[0]
        assert (e.dry_run, d.dry_run) == (False, True)
        same_but_mode = replace(d, dry_run=False, extra=_without_work(d.extra))
        assert same_but_mode == replace(e, extra=_without_work(e.extra))
        shown = presented(d)
        assert shown.message == "would " + e.message
        assert not WORK_FIELDS & shown.extra.keys()

    assert real_kernel.snapshot_files() != real_before  # the enforcing run did write
    assert dry_kernel.snapshot_files() == dry_before
    assert io.attempted == []
    assert not (tmp_path / "d").exists()  # nor the state file


# ---------------------------------------------------------------- one choice


def _modules(under: Path) -> Iterator[Path]:
    return iter(sorted(under.rglob("*.py")))


def test_no_knob_asks_whether_it_runs_dry() -> None:
    asking = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in _modules(PACKAGE / "knobs")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Attribute) and node.attr == "dry_run")
        or (isinstance(node, ast.Name) and node.id == "dry_run")
    ]
    assert asking == []
    assert not hasattr(KnobWriter, "dry_run")
    assert not hasattr(KnobIO, "dry_run")


def _names(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.alias):
            yield node.name
        elif isinstance(node, ast.Attribute):
            yield node.attr


def test_the_overlay_is_chosen_only_where_the_executor_is_built() -> None:
    naming = {str(path.relative_to(PACKAGE)) for path in _modules(PACKAGE) if "DryRunFiles" in _names(path)}
    # kernel_files.py defines it (a class statement, not a use); the replay builds its executor with run's.
    assert naming == {"daemon/run.py"}


# ---------------------------------------------------------------- the daemon's records

SEED_FULL_TOTAL = 45112887


@dataclass
class _Daemon:
    """The service on a fake tree, with its mode chosen where the daemon chooses it (build_executor)."""

    kernel: FakeKernel
    clock: FakeClock
    triggers: FakeTriggers
    writer: CapturingWriter
    service: Service

    def pressure(self, added_us: int) -> None:
        """Full stall on the seed grows by ``added_us``, and its trigger fires."""
        total = SEED_FULL_TOTAL + added_us
        self.kernel.set_pressure(SEED, SEED_PRESSURE.replace(f"total={SEED_FULL_TOTAL}", f"total={total}"))
        self.triggers.fire(SEED)

    def step(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.service.step()

    def close(self) -> None:
        self.service.watcher.close()
        self.triggers.close()


@contextmanager
def _daemon(base: Path, policy: str, dry_run: bool) -> Iterator[_Daemon]:
    kernel = FakeKernel(base / "kernel")
    kernel.add_seed(SEED)
    policies = base / "policies.d"
    policies.mkdir()
    (policies / "seed.yaml").write_text(policy)
    overrides = {
        "cgroup_root": kernel.cgroup_root,
        "proc_root": kernel.proc_root,
        "policies_dir": policies,
        "state_file": base / "run" / "state.json",
        "log_target": "stderr",
        "dry_run": dry_run,
    }
    settings = load_settings(None, False, overrides, environ={})
    clock = FakeClock()
    triggers = FakeTriggers(kernel.roots)
    writer = CapturingWriter()
    service = Service(
        settings=settings,
        clock=clock,
        writer=writer,
        notifier=Notifier(environ={}),
        executor=build_executor(settings, clock),
        watcher=Watcher(kernel.roots, clock, 2.0, arm=triggers.arm, poll_factory=triggers.poll_factory),
        capabilities=probe(kernel.roots, trigger_checker=lambda _p, _s: TriggerCheck(True, "", None)),
    )
    daemon = _Daemon(kernel, clock, triggers, writer, service)
    try:
        service.start()
        yield daemon
    finally:
        daemon.close()


def test_a_dry_run_reclaim_record_carries_no_figures_of_work_not_done(tmp_path: Path) -> None:
    with _daemon(tmp_path, POLICY, dry_run=True) as daemon:
        kernel, writer = daemon.kernel, daemon.writer
        before = kernel.snapshot_files()
        daemon.pressure(500_000)
        daemon.step(2)
        pressure_only = {
            name: data for name, data in kernel.snapshot_files().items() if "pressure" not in name
        }
        assert pressure_only == {name: data for name, data in before.items() if "pressure" not in name}

    (applied,) = [r for r in writer.records if r.type is RecordType.ACTION_APPLIED]
    fields = dict(record_fields(applied))
    assert (fields["REMEDIATOR_ACTION"], fields["REMEDIATOR_RESULT"]) == ("reclaim", "would")
    assert fields["REMEDIATOR_DRY_RUN"] == "1"
    assert fields["MESSAGE"].startswith("would reclaim ")
    assert "REMEDIATOR_RECLAIM_ASKED_BYTES" in fields  # the plan: the same in both modes
    for work in ("RECLAIM_COMPLETED_BYTES", "RECLAIM_REQUESTED_BYTES", WRITTEN_FIELD):
        assert "REMEDIATOR_" + work not in fields


def test_the_daemon_reads_its_mode_from_the_settings_only_where_it_builds_the_executor() -> None:
    # Beside the one choice, the setting is only shown (the metrics gauge, `remediator check`): the
    # service, the executor and the knobs take the mode of the executor they were handed.
    reading = {
        str(path.relative_to(PACKAGE))
        for path in _modules(PACKAGE)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr == "dry_run"
        and isinstance(node.value, (ast.Name, ast.Attribute))
        and (getattr(node.value, "id", None) or getattr(node.value, "attr", "")) == "settings"
    }
    assert reading == {"daemon/run.py", "daemon/metrics_feed.py", "commands/check.py"}


def test_a_dry_run_write_the_kernel_would_refuse_is_recorded_as_enforcing_records_it(tmp_path: Path) -> None:
    # drop_caches is write-only and never read first: before the overlay, dry-run said "would" here.
    kernel = kernel_at(tmp_path)
    (kernel.proc_root / "sys" / "vm" / "drop_caches").unlink()
    outcomes = [
        Executor(files_of(kernel.roots), StateStore.read_only(None), FakeClock()).execute(
            _actions(Knob.DROP_CACHES)[0]
        )
        for files_of in (KernelFiles.under, DryRunFiles.under)
    ]
    enforced, simulated = outcomes
    assert enforced.result == simulated.result == "declined"
    assert [replace(r, dry_run=False) for r in simulated.records] == list(enforced.records)


# ---------------------------------------------------------------- what the core sees in dry-run

HIGH_POLICY = """\
target: {kind: cgroups, include: ["system.slice/*.service"]}
trigger: {pressure: full, stall_ms: 100, window_ms: 2000}
actions:
  - {kind: memory_high, relative_to: max, fraction: 0.9}
verify_sec: 2
rollback: {calm_sec: 10}
"""


def _memory_high_then_calm(daemon: _Daemon) -> None:
    """Pressure, memory.high set; pressure at its next looks (the ladder ends); calm; the rollback."""
    daemon.pressure(500_000)
    daemon.step(2)
    daemon.pressure(1_000_000)
    daemon.step(1)
    daemon.pressure(1_500_000)
    daemon.step(2)
    for _ in range(10):
        daemon.step(2)


def _as_enforcing_words_it(record: Record) -> Record:
    """A record without what may differ between the modes: the flag, "would", a write's result (applied,
    restored), the figures of work done (``WORK_FIELDS``)."""
    written = record.result in ("would", "applied", "restored", "partial")
    return replace(
        record,
        dry_run=False,
        message=record.message.removeprefix(DRY_RUN_PREFIX) if record.dry_run else record.message,
        result="written" if written else record.result,
        extra=_without_work(record.extra),
    )


def _since_first_pressure(records: Sequence[Record]) -> List[Record]:
    # The start's records name the mode and the temporary directories.
    first = next(i for i, r in enumerate(records) if r.type is RecordType.PRESSURE_CONFIRMED)
    return list(records[first:])


def test_a_dry_run_records_what_enforcing_records_through_memory_highs_next_looks_and_rollback(
    tmp_path: Path,
) -> None:
    runs: Dict[bool, List[Record]] = {}
    for dry_run in (False, True):
        with _daemon(tmp_path / str(dry_run), HIGH_POLICY, dry_run) as daemon:
            before = daemon.kernel.read_file(SEED, "memory.high")
            _memory_high_then_calm(daemon)
            after = daemon.kernel.read_file(SEED, "memory.high")
            assert after.strip() == before.strip() == "max"  # rolled back, or never written
        runs[dry_run] = _since_first_pressure(daemon.writer.records)

    enforcing, dry = runs[False], runs[True]
    assert [r.type for r in enforcing] == [
        RecordType.PRESSURE_CONFIRMED,
        RecordType.ACTION_APPLIED,  # memory.high set
        RecordType.ESCALATED,  # its next looks: still ours, pressure still there
        RecordType.ACTION_DECLINED,  # ladder exhausted
        RecordType.ROLLED_BACK,  # calm: given back
    ]
    assert [_as_enforcing_words_it(r) for r in dry] == [_as_enforcing_words_it(r) for r in enforcing]
    written = (RecordType.ACTION_APPLIED, RecordType.ROLLED_BACK)
    assert [r.result for r in dry if r.type in written] == ["would", "would"]
    assert [r.result for r in enforcing if r.type in written] == ["applied", "restored"]
    assert all(r.dry_run for r in dry) and not any(r.dry_run for r in enforcing)


def test_a_dry_run_does_not_stand_back_from_its_own_swallowed_write_but_from_another_writers(
    tmp_path: Path,
) -> None:
    with _daemon(tmp_path, HIGH_POLICY, dry_run=True) as daemon:
        original = daemon.kernel.read_file(SEED, "memory.high")
        daemon.pressure(500_000)
        daemon.step(2)
        (key,) = daemon.service.state.targets
        owned = daemon.service.state.targets[key].memory_high
        assert owned is not None and original.strip() == "max"  # the kernel still holds its own
        daemon.pressure(1_000_000)
        daemon.step(1)
        assert not [r for r in daemon.writer.records if r.type is RecordType.STOOD_BACK]
        assert daemon.service.state.targets[key].memory_high == owned  # still ours: the overlay shows it

        daemon.kernel.set_file(SEED, "memory.high", f"{3 * GiB}\n")  # systemd, an operator
        daemon.pressure(1_500_000)
        daemon.step(2)
        (stood_back,) = [r for r in daemon.writer.records if r.type is RecordType.STOOD_BACK]
        assert "by another writer; releasing it, not restoring" in stood_back.message
        assert f"to {format_bytes(3 * GiB)}" in stood_back.message
        assert daemon.service.state.targets[key].memory_high is None
        for _ in range(10):
            daemon.step(2)
        assert not [r for r in daemon.writer.records if r.type is RecordType.ROLLED_BACK]  # theirs now
        assert daemon.kernel.read_file(SEED, "memory.high") == f"{3 * GiB}\n"


def test_the_snapshots_show_the_files_as_the_overlay_answers_them(tmp_path: Path) -> None:
    kernel = kernel_at(tmp_path)
    vfs = ProcFile("sys/vm/vfs_cache_pressure")
    real = KernelFiles.under(kernel.roots)
    files = DryRunFiles(WritesRefused(kernel))
    cgroup, node = read_cgroup_snapshot(kernel.roots, APP), read_node_snapshot(kernel.roots)
    assert files.seen(cgroup) == cgroup and files.seen(node) == node  # nothing swallowed yet

    files.write(HIGH, str(3 * GiB).encode())
    files.write(vfs, b"200")
    cgroup, node = read_cgroup_snapshot(kernel.roots, APP), read_node_snapshot(kernel.roots)
    assert (cgroup.high_bytes, node.vfs_cache_pressure) == (None, 100)  # the kernel's own
    assert files.seen(cgroup) == replace(cgroup, high_bytes=3 * GiB)
    assert files.seen(node) == replace(node, vfs_cache_pressure=200)
    assert real.seen(cgroup) is cgroup and real.seen(node) is node

    kernel.set_file(APP, "memory.high", f"{5 * GiB}\n")  # another writer: the kernel's value again
    cgroup = read_cgroup_snapshot(kernel.roots, APP)
    assert files.seen(cgroup) == cgroup


def test_each_knob_that_names_its_files_snapshot_field_names_one_of_the_right_snapshot() -> None:
    named = {
        plugin.knob: (plugin.owned.per_cgroup, plugin.owned.snapshot_field)
        for plugin in plugins()
        if plugin.owned is not None and plugin.owned.snapshot_field is not None
    }
    assert named == {
        Knob.MEMORY_HIGH: (True, "high_bytes"),
        Knob.VFS_CACHE_PRESSURE: (False, "vfs_cache_pressure"),
    }
    for per_cgroup, field in named.values():
        assert field in {f.name for f in fields(CgroupSnapshot if per_cgroup else NodeSnapshot)}
