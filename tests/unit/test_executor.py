"""The executor on FakeKernel trees: re-read, record, write, restore, and dry-run."""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest

from remediator.clock import FakeClock
from remediator.daemon.confined_io import CgroupFile, ConfinedIO, KernelFile
from remediator.daemon.executor import Executor, Outcome
from remediator.daemon.kernel_files import DryRunFiles, KernelFiles
from remediator.daemon.state_schema import KIND_MEMORY_HIGH, KIND_SYSCTL
from remediator.daemon.state_store import StateStore
from remediator.kernel.roots import KernelRoots
from remediator.knobs.base import Action, ReleaseOwnership
from remediator.knobs.memory_high import RestoreMemoryHigh, SetMemoryHigh
from remediator.knobs.reclaim import RECLAIM_CHUNK_BYTES, Reclaim
from remediator.knobs.sysctl import RestoreSysctl, SetSysctl
from remediator.records import PRIORITY_DEBUG, Knob, Record, RecordType, presented
from tests.fakefs import FakeKernel

APP = "system.slice/app.service"
OTHER = "system.slice/other.service"
GiB = 1 << 30
MiB = 1 << 20


def cause(message: str, cgroup: Optional[str] = APP, kind: RecordType = RecordType.ACTION_APPLIED) -> Record:
    return Record(kind, message, policy="cache-heavy", cgroup=cgroup, evidence={"SOME_AVG10": "78.20"})


def set_high(value: Optional[int], expected: Optional[int], cgroup: str = APP) -> SetMemoryHigh:
    return SetMemoryHigh(cgroup, value, expected, cause(f"set memory.high of {cgroup} to {value}", cgroup))


def restore_high(ours: Optional[int], cgroup: str = APP) -> RestoreMemoryHigh:
    return RestoreMemoryHigh(
        cgroup, ours, cause(f"restore memory.high of {cgroup}", cgroup, RecordType.ROLLED_BACK)
    )


def reclaim(amount: int, timeout_sec: float = 5.0, cgroup: str = APP) -> Reclaim:
    return Reclaim(cgroup, amount, timeout_sec, cause(f"reclaim {amount} bytes from {cgroup}", cgroup))


def set_sysctl(name: str, value: int, expected: Optional[int]) -> SetSysctl:
    return SetSysctl(name, value, expected, cause(f"set vm.{name} to {value}", None))


def restore_sysctl(name: str, ours: int) -> RestoreSysctl:
    return RestoreSysctl(name, ours, cause(f"restore vm.{name}", None, RecordType.ROLLED_BACK))


class ScriptedIO(ConfinedIO):
    """The real confined writer, with a hook before each write (to fail, or to
    play the kernel's part) and a log of what was written."""

    def __init__(
        self, roots: KernelRoots, before_write: Optional[Callable[[KernelFile, bytes], None]] = None
    ):
        super().__init__(roots)
        self.before_write = before_write
        self.writes: List[Tuple[str, bytes]] = []

    def write(self, target: KernelFile, data: bytes) -> None:
        if self.before_write is not None:
            self.before_write(target, data)
        super().write(target, data)
        self.writes.append((target.describe(), data))


@dataclass
class Rig:
    kernel: FakeKernel
    store: StateStore
    clock: FakeClock
    executor: Executor
    io: ScriptedIO

    def high(self, cgroup: str = APP) -> str:
        return self.kernel.read_file(cgroup, "memory.high").strip()

    def vfs(self) -> str:
        return (self.kernel.proc_root / "sys" / "vm" / "vfs_cache_pressure").read_text().strip()

    def stored(self) -> List[Dict[str, object]]:
        entries: List[Dict[str, object]] = json.loads(self.store_path.read_text())["entries"]
        return entries

    @property
    def store_path(self) -> Path:
        assert self.store.path is not None
        return self.store.path


def make_rig(
    base: Path,
    dry_run: bool = False,
    before_write: Optional[Callable[[KernelFile, bytes], None]] = None,
    state_path: Optional[Path] = None,
) -> Rig:
    kernel = FakeKernel(base / "kernel")
    kernel.add_seed(APP)
    kernel.add_cgroup(OTHER, current=GiB, high=None)
    path = state_path or base / "state" / "state.json"
    store = StateStore.read_only(path) if dry_run else StateStore(path)
    clock = FakeClock()
    io = ScriptedIO(kernel.roots, before_write)
    files = DryRunFiles(io) if dry_run else KernelFiles(io)  # as run.build_executor chooses
    executor = Executor(files, store, clock, sleep=clock.advance)
    return Rig(kernel, store, clock, executor, io)


def make_rig_on(previous: Rig) -> Rig:
    """A fresh executor (a restarted daemon) on the same kernel tree and state file."""
    store = StateStore(previous.store_path)
    io = ScriptedIO(previous.kernel.roots)
    executor = Executor(KernelFiles(io), store, previous.clock, sleep=previous.clock.advance)
    return Rig(previous.kernel, store, previous.clock, executor, io)


@dataclass
class KernelWriteFaults:
    """os.write failing with chosen errnos, only for files of the fake kernel tree."""

    base: str
    # file name -> errno of each attempt in turn (0: let it succeed), then the real write
    once: Dict[str, List[int]] = field(default_factory=dict)
    always: Dict[str, int] = field(default_factory=dict)
    attempts: List[str] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.startswith(self.base):
                name = os.path.basename(path)
                self.attempts.append(name)
                planned = self.once.get(name)
                code = planned.pop(0) if planned else 0
                if code:
                    raise OSError(code, os.strerror(code))
                if name in self.always:
                    code = self.always[name]
                    raise OSError(code, os.strerror(code))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)


def only(outcome: Outcome) -> Record:
    assert len(outcome.records) == 1, outcome.records
    return outcome.records[0]


# ---- memory.high ------------------------------------------------------------------


def test_set_memory_high_records_the_original_then_writes(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "applied"
    assert rig.high() == str(3 * GiB)
    record = only(outcome)
    assert (record.type, record.before, record.after, record.dry_run) == (
        RecordType.ACTION_APPLIED,
        "max",
        str(3 * GiB),
        False,
    )
    assert record.message == f"set memory.high of {APP} to {3 * GiB}"
    assert record.evidence == {"SOME_AVG10": "78.20"}
    assert rig.stored() == [
        {
            "kind": "memory_high",
            "cgroup": APP,
            "cgroup_id": (rig.kernel.cgroup_root / APP).stat().st_ino,
            "original": "max",
            "ours": 3 * GiB,
            "pending": None,
            "policy": "cache-heavy",
            "recorded_at": rig.clock.wall(),
        }
    ]


def test_original_is_recorded_before_the_write_even_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path)
    faults = KernelWriteFaults(str(rig.kernel.base), always={"memory.high": errno.EACCES})
    faults.install(monkeypatch)
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "failed"
    record = only(outcome)
    assert (record.type, record.errno) == (RecordType.ACTION_FAILED, "EACCES")
    assert faults.attempts == ["memory.high"]  # a permission error is not retried
    assert rig.high() == "max"
    # The original was on disk before the attempt, and the failed write is not claimed as ours.
    entry = rig.stored()[0]
    assert (entry["original"], entry["ours"], entry["pending"]) == ("max", "max", None)


def test_set_memory_high_stands_back_when_another_writer_changed_it(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.kernel.set_file(APP, "memory.high", f"{5 * GiB}\n")  # systemd's MemoryHigh=, say
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "stood_back"
    record = only(outcome)
    assert record.type == RecordType.STOOD_BACK
    assert "5.0 GiB" in record.message and "another writer" in record.message
    assert rig.high() == str(5 * GiB)
    assert not rig.store_path.exists()


def test_first_original_survives_later_changes_and_is_what_restore_puts_back(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    assert rig.executor.execute(set_high(3 * GiB, expected=None)).result == "applied"
    assert rig.executor.execute(set_high(2 * GiB, expected=3 * GiB)).result == "applied"
    assert rig.stored()[0]["original"] == "max"
    outcome = rig.executor.execute(restore_high(2 * GiB))
    assert outcome.result == "restored"
    record = only(outcome)
    assert (record.type, record.before, record.after) == (RecordType.ROLLED_BACK, str(2 * GiB), "max")
    assert rig.high() == "max"
    assert rig.stored() == []


def test_restore_leaves_another_writers_value_alone_and_forgets_it(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.executor.execute(set_high(3 * GiB, expected=None))
    rig.kernel.set_file(APP, "memory.high", f"{6 * GiB}\n")
    outcome = rig.executor.execute(restore_high(3 * GiB))
    assert outcome.result == "not_restored"
    assert only(outcome).type == RecordType.STOOD_BACK
    assert rig.high() == str(6 * GiB)
    assert rig.stored() == []


def test_restore_without_a_recorded_original_writes_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.kernel.set_file(APP, "memory.high", f"{3 * GiB}\n")
    outcome = rig.executor.execute(restore_high(3 * GiB))
    assert outcome.result == "not_restored"
    assert rig.high() == str(3 * GiB)
    assert rig.io.writes == []


def test_release_ownership_forgets_the_original_without_writing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.executor.execute(set_high(3 * GiB, expected=None))
    rig.executor.execute(set_sysctl("vfs_cache_pressure", 200, expected=100))
    writes_before = list(rig.io.writes)
    released = rig.executor.execute(ReleaseOwnership(APP, "memory.high", cause("release memory.high")))
    assert released.result == "applied"
    released = rig.executor.execute(ReleaseOwnership(None, "vfs_cache_pressure", cause("release", None)))
    assert released.result == "applied"
    assert rig.stored() == []
    assert rig.io.writes == writes_before
    assert rig.high() == str(3 * GiB)


# ---- reclaim --------------------------------------------------------------------------


def test_reclaim_is_written_in_chunks_until_done(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    outcome = rig.executor.execute(reclaim(200 * MiB))
    assert outcome.result == "applied"
    assert [data for _, data in rig.io.writes] == [b"67108864", b"67108864", b"67108864", b"8388608"]
    record = only(outcome)
    assert record.extra["RECLAIM_REQUESTED_BYTES"] == str(200 * MiB)
    assert record.extra["RECLAIM_COMPLETED_BYTES"] == str(200 * MiB)
    assert not rig.store_path.exists()  # reclaim changes no setting: nothing to own


def test_reclaim_records_memory_current_before_and_after(tmp_path: Path) -> None:
    def kernel_reclaims(target: KernelFile, data: bytes) -> None:
        if isinstance(target, CgroupFile) and target.name == "memory.reclaim":
            current = int(rig.kernel.read_file(target.cgroup, "memory.current"))
            rig.kernel.set_file(target.cgroup, "memory.current", f"{current - int(data)}\n")

    rig = make_rig(tmp_path, before_write=kernel_reclaims)
    before = int(rig.kernel.read_file(APP, "memory.current"))
    record = only(rig.executor.execute(reclaim(100 * MiB)))
    assert (record.before, record.after) == (str(before), str(before - 100 * MiB))


def test_eagain_from_memory_reclaim_is_partial_success_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path)
    faults = KernelWriteFaults(str(rig.kernel.base), once={"memory.reclaim": [0, errno.EAGAIN]})
    faults.install(monkeypatch)
    outcome = rig.executor.execute(reclaim(200 * MiB))
    assert outcome.result == "partial"
    assert faults.attempts == ["memory.reclaim", "memory.reclaim"]  # not retried, not continued
    record = only(outcome)
    assert "EAGAIN" in record.message
    assert record.extra["RECLAIM_REQUESTED_BYTES"] == str(2 * RECLAIM_CHUNK_BYTES)
    assert record.extra["RECLAIM_COMPLETED_BYTES"] == str(RECLAIM_CHUNK_BYTES)
    assert record.extra["RECLAIM_ASKED_BYTES"] == str(200 * MiB)


def test_reclaim_stops_when_its_time_budget_is_used(tmp_path: Path) -> None:
    def slow_kernel(target: KernelFile, data: bytes) -> None:
        rig.clock.advance(1.0)

    rig = make_rig(tmp_path, before_write=slow_kernel)
    outcome = rig.executor.execute(reclaim(5 * RECLAIM_CHUNK_BYTES, timeout_sec=2.5))
    assert outcome.result == "partial"
    assert len(rig.io.writes) == 3
    assert only(outcome).extra["RECLAIM_COMPLETED_BYTES"] == str(3 * RECLAIM_CHUNK_BYTES)


def test_reclaim_is_declined_when_the_kernel_has_no_memory_reclaim(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    (rig.kernel.cgroup_root / APP / "memory.reclaim").unlink()
    outcome = rig.executor.execute(reclaim(100 * MiB))
    assert outcome.result == "declined"
    assert only(outcome).type == RecordType.ACTION_DECLINED
    assert rig.io.writes == []


def test_a_symlinked_memory_reclaim_is_refused_as_such(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    target = rig.kernel.cgroup_root / APP / "memory.reclaim"
    target.unlink()
    os.symlink(tmp_path / "elsewhere", target)
    outcome = rig.executor.execute(reclaim(100 * MiB))
    assert outcome.result == "refused"
    assert "symlink" in only(outcome).message and "5.19" not in only(outcome).message
    assert rig.io.writes == []


# ---- sysctls ----------------------------------------------------------------------------


def test_vfs_cache_pressure_is_recorded_written_and_restored(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    assert rig.executor.execute(set_sysctl("vfs_cache_pressure", 200, expected=100)).result == "applied"
    assert rig.vfs() == "200"
    entry = rig.stored()[0]
    assert (entry["kind"], entry["sysctl"], entry["original"], entry["ours"]) == (
        "sysctl",
        "vfs_cache_pressure",
        100,
        200,
    )
    assert rig.executor.execute(restore_sysctl("vfs_cache_pressure", 200)).result == "restored"
    assert rig.vfs() == "100"
    assert rig.stored() == []


def test_drop_caches_is_written_and_never_recorded(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    outcome = rig.executor.execute(set_sysctl("drop_caches", 1, expected=None))
    assert outcome.result == "applied"
    assert (rig.kernel.proc_root / "sys" / "vm" / "drop_caches").read_text() == "1"
    assert not rig.store_path.exists()


@pytest.mark.parametrize(
    ("name", "value"), [("swappiness", 10), ("drop_caches", 4), ("overcommit_memory", 1)]
)
def test_sysctls_outside_the_allow_list_are_refused(tmp_path: Path, name: str, value: int) -> None:
    rig = make_rig(tmp_path)
    before = rig.kernel.snapshot_files()
    outcome = rig.executor.execute(set_sysctl(name, value, expected=None))
    assert outcome.result == "refused"
    assert rig.kernel.snapshot_files() == before


# ---- errors at the edge -----------------------------------------------------------------


def _remove_cgroup(kernel: FakeKernel, cgroup: str) -> None:
    shutil.rmtree(kernel.cgroup_root / cgroup)


@pytest.mark.parametrize(
    "action", [set_high(3 * GiB, expected=None), reclaim(100 * MiB)], ids=["memory_high", "reclaim"]
)
def test_cgroup_removed_between_decision_and_write_is_gone_quietly(tmp_path: Path, action: Action) -> None:
    rig = make_rig(tmp_path)
    _remove_cgroup(rig.kernel, APP)
    outcome = rig.executor.execute(action)
    assert outcome.result == "gone"
    record = only(outcome)
    assert record.effective_priority == PRIORITY_DEBUG
    assert not rig.store_path.exists()


def test_cgroup_removed_during_the_write_is_gone(tmp_path: Path) -> None:
    def rmdir_first(target: KernelFile, data: bytes) -> None:
        _remove_cgroup(rig.kernel, APP)

    rig = make_rig(tmp_path, before_write=rmdir_first)
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "gone"
    assert rig.stored() == []  # no original kept for a cgroup that no longer exists


def test_symlink_inside_the_cgroup_tree_is_refused_and_its_target_unchanged(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "memory.high").write_text("max\n")
    (outside / "memory.reclaim").write_text("")
    os.symlink(outside, rig.kernel.cgroup_root / "system.slice" / "evil.service")
    for action in (
        set_high(GiB, None, "system.slice/evil.service"),
        reclaim(GiB, cgroup="system.slice/evil.service"),
    ):
        outcome = rig.executor.execute(action)
        assert outcome.result == "refused"
        assert only(outcome).type == RecordType.ACTION_FAILED
    assert (outside / "memory.high").read_text() == "max\n"
    assert (outside / "memory.reclaim").read_text() == ""


def test_ebusy_bursts_are_retried_within_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig(tmp_path)
    faults = KernelWriteFaults(
        str(rig.kernel.base), once={"memory.high": [errno.EBUSY, errno.EINTR, errno.EBUSY]}
    )
    faults.install(monkeypatch)
    start = rig.clock.monotonic()
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "applied"
    assert faults.attempts == ["memory.high"] * 4
    assert rig.high() == str(3 * GiB)
    # Exponential backoff from 10 ms: 10 + 20 + 40 ms of (fake) sleeping.
    assert rig.clock.monotonic() - start == pytest.approx(0.07)


def test_endless_ebusy_fails_once_the_budget_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path)
    faults = KernelWriteFaults(str(rig.kernel.base), always={"memory.high": errno.EBUSY})
    faults.install(monkeypatch)
    start = rig.clock.monotonic()
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "failed"
    assert only(outcome).errno == "EBUSY"
    elapsed = rig.clock.monotonic() - start
    assert elapsed == pytest.approx(2.0)  # never sleeps past the budget
    assert 5 < len(faults.attempts) < 30
    assert rig.high() == "max"


def test_eagain_on_memory_high_is_transient_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path)
    faults = KernelWriteFaults(str(rig.kernel.base), once={"memory.high": [errno.EAGAIN]})
    faults.install(monkeypatch)
    assert rig.executor.execute(set_high(3 * GiB, expected=None)).result == "applied"
    assert faults.attempts == ["memory.high", "memory.high"]


def test_unexpected_errors_become_a_failed_record_not_an_exception(tmp_path: Path) -> None:
    def bug(target: KernelFile, data: bytes) -> None:
        raise RuntimeError("boom")

    rig = make_rig(tmp_path, before_write=bug)
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "failed"
    assert "RuntimeError" in only(outcome).message


def test_unparsable_kernel_value_fails_without_writing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.kernel.set_file(APP, "memory.high", "lots\n")
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "failed"
    assert rig.io.writes == []


# ---- the state store failing ----------------------------------------------------------


def test_unwritable_store_refuses_the_change_and_writes_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("")
    rig = make_rig(tmp_path, state_path=blocker / "state.json")
    before = rig.kernel.snapshot_files()
    for action in (set_high(3 * GiB, expected=None), set_sysctl("vfs_cache_pressure", 200, expected=100)):
        outcome = rig.executor.execute(action)
        assert outcome.result == "refused"
        record = only(outcome)
        assert record.type == RecordType.STATE_UNWRITABLE
        assert record.errno in ("EEXIST", "ENOTDIR")
        assert "cannot be undone" in record.message
    assert rig.kernel.snapshot_files() == before


def test_full_disk_refuses_the_change_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path)
    before = rig.kernel.snapshot_files()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "refused"
    assert only(outcome).errno == "ENOSPC"
    assert rig.kernel.snapshot_files() == before


def test_a_write_that_cannot_be_confirmed_still_counts_as_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(tmp_path)
    real_fsync = os.fsync
    calls = {"n": 0}

    def disk_fills_after_the_announcement(fd: int) -> None:
        # record_and_begin_write persists (2 fsyncs: file and directory); update_ours finds the disk full.
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_fills_after_the_announcement)
    outcome = rig.executor.execute(set_high(3 * GiB, expected=None))
    assert outcome.result == "applied"
    assert [(r.type, r.result) for r in outcome.records] == [
        (RecordType.ACTION_APPLIED, "applied"),
        (RecordType.STATE_UNWRITABLE, "applied"),
    ]
    assert rig.high() == str(3 * GiB)
    monkeypatch.setattr(os, "fsync", real_fsync)
    # After a crash now, the announced value on disk lets recovery give the original back.
    assert rig.stored()[0]["pending"] == {"value": 3 * GiB}
    assert [r.result for r in make_rig_on(rig).executor.recover()] == ["restored"]
    assert rig.high() == "max"


# ---- dry-run ------------------------------------------------------------------------------

SCENARIO: Sequence[Action] = (
    set_high(3 * GiB, expected=None),
    reclaim(100 * MiB),
    set_high(2 * GiB, expected=3 * GiB),
    set_sysctl("vfs_cache_pressure", 200, expected=100),
    set_sysctl("drop_caches", 1, expected=None),
    restore_high(2 * GiB),
    restore_sysctl("vfs_cache_pressure", 200),
    set_high(GiB, expected=2 * GiB, cgroup=OTHER),  # OTHER is at "max": stands back
    restore_high(GiB, cgroup=OTHER),  # never set: nothing to restore
)
ENFORCING_RESULTS = [
    "applied",
    "applied",
    "applied",
    "applied",
    "applied",
    "restored",
    "restored",
    "stood_back",
    "not_restored",
]


def test_dry_run_writes_nothing_and_leaves_the_store_alone(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, dry_run=True)
    before = rig.kernel.snapshot_files()
    results = [rig.executor.execute(a).result for a in SCENARIO]
    assert results == [
        "would",
        "would",
        "would",
        "would",
        "would",
        "would",
        "would",
        "stood_back",
        "not_restored",
    ]
    assert rig.kernel.snapshot_files() == before
    assert rig.io.writes == []
    assert not rig.store_path.parent.exists()


def test_dry_run_records_match_enforcing_apart_from_mode_result_and_would(tmp_path: Path) -> None:
    enforcing = make_rig(tmp_path / "enforcing")
    dry = make_rig(tmp_path / "dry", dry_run=True)
    for action, expected_result in zip(SCENARIO, ENFORCING_RESULTS):
        real = enforcing.executor.execute(action)
        simulated = dry.executor.execute(action)
        assert real.result == expected_result
        assert len(real.records) == len(simulated.records) == 1
        e, d = real.records[0], simulated.records[0]
        assert not e.dry_run and d.dry_run
        # The executor words both alike; a reader sees the dry-run one worded at one place.
        assert replace(d, dry_run=False) == e
        shown = presented(d)
        written = e.result in ("applied", "restored", "partial")
        assert shown.message == ("would " + e.message if written else e.message)
        assert shown.result == ("would" if written else e.result)
        assert simulated.result == ("would" if written else e.result)


def test_dry_run_expects_after_a_swallowed_write_what_enforcing_expects(tmp_path: Path) -> None:
    # The core decides on the overlaid snapshot (tests/unit/test_dry_run_overlay.py): after a swallowed
    # write it expects ours, as enforcing does, and the files answer ours; the kernel's value is no
    # longer what they answer, so expecting it is standing back, as enforcing would.
    rig = make_rig(tmp_path, dry_run=True)
    before = rig.kernel.snapshot_files()
    assert rig.executor.execute(set_high(3 * GiB, expected=None)).result == "would"
    assert rig.executor.execute(set_high(2 * GiB, expected=None)).result == "stood_back"
    second = rig.executor.execute(set_high(2 * GiB, expected=3 * GiB))
    assert second.result == "would"
    assert (only(second).before, only(second).after) == (str(3 * GiB), str(2 * GiB))
    restored = rig.executor.execute(restore_high(2 * GiB))
    assert restored.result == "would"
    assert (only(restored).before, only(restored).after) == (str(2 * GiB), "max")
    assert rig.kernel.snapshot_files() == before


@pytest.mark.parametrize("expected", [3 * GiB, None], ids=["ours", "the-kernels-before"])
def test_dry_run_still_stands_back_from_another_writer(tmp_path: Path, expected: Optional[int]) -> None:
    rig = make_rig(tmp_path, dry_run=True)
    rig.executor.execute(set_high(3 * GiB, expected=None))
    rig.kernel.set_file(APP, "memory.high", f"{5 * GiB}\n")
    assert rig.executor.execute(set_high(2 * GiB, expected=expected)).result == "stood_back"


def test_dry_run_release_keeps_the_observation_wording(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, dry_run=True)
    rig.executor.execute(set_high(3 * GiB, expected=None))
    message = f"memory.high of {APP} changed by another writer; releasing it, not restoring"
    released = rig.executor.execute(
        ReleaseOwnership(APP, "memory.high", cause(message, kind=RecordType.STOOD_BACK))
    )
    record = presented(only(released))
    assert (record.message, record.result, record.dry_run, record.type) == (
        message,
        "would",
        True,
        RecordType.STOOD_BACK,
    )


# ---- recovery ------------------------------------------------------------


def _leave_state(path: Path, entries: List[Dict[str, object]]) -> None:
    """A state file as a previous run that crashed would have left it."""
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text(json.dumps({"schema_version": 1, "entries": entries}))
    path.chmod(0o600)


def _memory_high_entry(
    cgroup: str, original: object, ours: object, pending: object = None
) -> Dict[str, object]:
    return {
        "kind": "memory_high",
        "cgroup": cgroup,
        "original": original,
        "ours": ours,
        "pending": pending,
        "policy": "cache-heavy",
        "recorded_at": 1_700_000_000.0,
    }


def test_recover_restores_values_a_crashed_run_left_behind(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.kernel.set_file(APP, "memory.high", f"{3 * GiB}\n")
    (rig.kernel.proc_root / "sys" / "vm" / "vfs_cache_pressure").write_text("200\n")
    sysctl = {
        "kind": "sysctl",
        "sysctl": "vfs_cache_pressure",
        "original": 100,
        "ours": 200,
        "pending": None,
        "policy": "node",
        "recorded_at": 1_700_000_000.0,
    }
    _leave_state(rig.store_path, [_memory_high_entry(APP, "max", 3 * GiB), sysctl])
    records = rig.executor.recover()
    assert [(r.type, r.result) for r in records] == [(RecordType.STATE_RECOVERED, "restored")] * 2
    assert (rig.high(), rig.vfs()) == ("max", "100")
    assert rig.stored() == []
    assert rig.store.entries() == ()


def test_recover_restores_a_value_written_just_before_the_crash(tmp_path: Path) -> None:
    # Crash after the write, before update_ours: only the announced value says it is ours.
    rig = make_rig(tmp_path)
    rig.kernel.set_file(APP, "memory.high", f"{2 * GiB}\n")
    _leave_state(rig.store_path, [_memory_high_entry(APP, "max", 3 * GiB, pending={"value": 2 * GiB})])
    records = rig.executor.recover()
    assert [r.result for r in records] == ["restored"]
    assert rig.high() == "max"


def test_recover_leaves_a_value_another_writer_set_since(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.kernel.set_file(APP, "memory.high", f"{6 * GiB}\n")
    _leave_state(rig.store_path, [_memory_high_entry(APP, "max", 3 * GiB)])
    records = rig.executor.recover()
    assert [(r.type, r.result) for r in records] == [(RecordType.STATE_RECOVERED, "not_restored")]
    assert rig.high() == str(6 * GiB)
    assert rig.stored() == []


def test_recover_skips_cgroups_that_no_longer_exist(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    _leave_state(rig.store_path, [_memory_high_entry("system.slice/gone.service", "max", GiB)])
    before = rig.kernel.snapshot_files()
    records = rig.executor.recover()
    assert [r.result for r in records] == ["gone"]
    assert records[0].effective_priority == PRIORITY_DEBUG
    assert rig.kernel.snapshot_files() == before
    assert rig.stored() == []


def test_recover_in_dry_run_reports_and_changes_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, dry_run=True)
    rig.kernel.set_file(APP, "memory.high", f"{3 * GiB}\n")
    _leave_state(rig.store_path, [_memory_high_entry(APP, "max", 3 * GiB)])
    kernel_before = rig.kernel.snapshot_files()
    state_before = rig.store_path.read_bytes()
    records = [presented(r) for r in rig.executor.recover()]
    assert [(r.type, r.result, r.dry_run) for r in records] == [(RecordType.STATE_RECOVERED, "would", True)]
    assert records[0].message.startswith("would restore memory.high of " + APP)
    assert rig.kernel.snapshot_files() == kernel_before
    assert rig.store_path.read_bytes() == state_before


def test_recover_quarantines_a_hostile_state_file_and_acts_on_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "memory.high").write_text("1\n")
    _leave_state(rig.store_path, [_memory_high_entry("../../outside", "max", 1)])
    before = rig.kernel.snapshot_files()
    records = rig.executor.recover()
    assert [r.type for r in records] == [RecordType.STATE_QUARANTINED]
    assert rig.kernel.snapshot_files() == before
    assert (outside / "memory.high").read_text() == "1\n"
    assert not rig.store_path.exists()
    assert rig.store_path.with_name("state.json.quarantine.1").exists()


def test_after_recovery_new_changes_are_recorded_afresh(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.kernel.set_file(APP, "memory.high", f"{3 * GiB}\n")
    _leave_state(rig.store_path, [_memory_high_entry(APP, "max", 3 * GiB)])
    rig.executor.recover()
    rig.executor.execute(set_high(GiB, expected=None))
    assert [(e.kind, e.name, e.original) for e in rig.store.entries()] == [(KIND_MEMORY_HIGH, APP, None)]
    assert rig.store.get(KIND_SYSCTL, "vfs_cache_pressure") is None


# ---- one ledger under churn ---------------------------------------------------------------------


def _recreate(kernel: FakeKernel, cgroup: str, high: Optional[int]) -> None:
    """Remove a cgroup and create another under its name (made first, so its inode differs)."""
    kernel.add_cgroup("replacement.scope", current=GiB, high=high)
    shutil.rmtree(kernel.cgroup_root / cgroup)
    os.rename(kernel.cgroup_root / "replacement.scope", kernel.cgroup_root / cgroup)


def test_originals_of_removed_cgroups_are_dropped_before_a_new_one_is_recorded(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    assert rig.executor.execute(set_high(3 * GiB, expected=None)).result == "applied"
    shutil.rmtree(rig.kernel.cgroup_root / APP)  # the pod went away while clamped
    outcome = rig.executor.execute(set_high(GiB // 2, expected=None, cgroup=OTHER))
    assert outcome.result == "applied"
    assert [e["cgroup"] for e in rig.stored()] == [OTHER]
    gone = [r for r in outcome.records if r.result == "gone"]
    assert [(r.cgroup, r.action) for r in gone] == [(APP, Knob.MEMORY_HIGH)]


def test_a_cgroup_created_again_under_a_clamped_name_does_not_inherit_its_original(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    assert rig.executor.execute(set_high(3 * GiB, expected=None)).result == "applied"
    _recreate(rig.kernel, APP, high=5 * GiB)  # the new cgroup's own memory.high
    # The ledger's entry is for the dead cgroup: restoring "max" into the new one would be wrong.
    restored = rig.executor.execute(restore_high(3 * GiB))
    assert restored.result == "gone"
    assert rig.high() == str(5 * GiB)
    assert rig.stored() == []


def test_a_clamp_of_a_recreated_cgroup_records_its_own_original(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    assert rig.executor.execute(set_high(3 * GiB, expected=None)).result == "applied"
    _recreate(rig.kernel, APP, high=5 * GiB)
    assert rig.executor.execute(set_high(2 * GiB, expected=5 * GiB)).result == "applied"
    [entry] = rig.stored()
    assert (entry["original"], entry["ours"]) == (5 * GiB, 2 * GiB)  # not the dead cgroup's "max"
    assert entry["cgroup_id"] == (rig.kernel.cgroup_root / APP).stat().st_ino


def test_a_node_whose_vfs_cache_pressure_is_0_is_left_alone_and_nothing_is_recorded(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    (rig.kernel.proc_root / "sys" / "vm" / "vfs_cache_pressure").write_text("0\n")
    outcome = rig.executor.execute(set_sysctl("vfs_cache_pressure", 200, expected=0))
    assert outcome.result == "declined"
    assert "is 0 (set on purpose" in only(outcome).message
    assert rig.vfs() == "0"
    assert not rig.store_path.exists() or rig.stored() == []
