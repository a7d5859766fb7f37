"""Faults at the single writer, on the real kernel: cgroups removed under it, and a busy kernel.

The executor runs in this process against the guest's real cgroup tree (real
ConfinedIO, real state store, system clock). A test hook around ConfinedIO
picks the moment of each fault; the kernel supplies the errors:

- ``removed_before_write``: the cgroup is removed after the executor re-read
  memory.high and recorded the original, just before it walks to the file to
  write it (the walk finds no directory);
- ``removed_between_open_and_write``: removed after memory.high was opened,
  before the write() (the kernel answers ENODEV on the orphaned file);
- ``restore_of_removed``: a value was set, then the cgroup went away; the
  restore finds it gone and forgets the original;
- ``ebusy_burst`` / ``ebusy_beyond_budget``: writes fail with EBUSY N times
  (the hook raises what the kernel would): retried within the time budget,
  then refused with ERRNO=EBUSY, leaving the value and the store consistent;
- ``eagain_burst``: memory.reclaim of a cgroup holding only anonymous memory
  (no swap): the kernel answers EAGAIN to every write; each is a "partial"
  outcome, at once, never an error.

No outcome may be an exception; after each case the state store must hold
nothing for a cgroup that is gone and no value may stay changed.
"""

from __future__ import annotations

import errno
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from remediator.clock import SystemClock
from remediator.daemon.confined_io import CgroupFile, ConfinedIO, KernelFile
from remediator.daemon.executor import Executor, Outcome
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.state_store import StateStore
from remediator.errors import KernelTransient
from remediator.kernel.roots import KernelRoots
from remediator.knobs.base import Action
from remediator.knobs.memory_high import RestoreMemoryHigh, SetMemoryHigh
from remediator.knobs.reclaim import Reclaim
from remediator.records import Record, RecordType
from tests.vm.guest import lib

NAME = "executor_faults"
WORKDIR = Path("/tmp") / NAME
PARENT = "vmt-exec"
MIB = 1 << 20
ROOTS = KernelRoots(lib.CGROUP_ROOT, Path("/proc"))


class HookedIO(ConfinedIO):
    """The real confined writer, with a hook run before each write (which may raise)."""

    def __init__(self, before_write: Callable[[KernelFile, bytes], None]) -> None:
        super().__init__(ROOTS)
        self.before_write = before_write
        self.writes = 0

    def write(self, target: KernelFile, data: bytes) -> None:
        self.writes += 1
        self.before_write(target, data)
        super().write(target, data)


def cause(text: str, cgroup: str) -> Record:
    return Record(RecordType.ACTION_APPLIED, text, policy="faults", cgroup=cgroup)


def outcome_doc(outcome: Outcome, started: float) -> Dict[str, Any]:
    return {
        "result": outcome.result,
        "seconds": round(time.monotonic() - started, 3),
        "records": [
            {"type": r.type.name, "result": r.result, "errno": r.errno, "message": r.message,
             "before": r.before, "after": r.after}
            for r in outcome.records
        ],
    }  # fmt: skip


def run_case(name: str, executor: Executor, store: StateStore, action: Action, cgroup: str) -> Dict[str, Any]:
    started = time.monotonic()
    try:
        doc = outcome_doc(executor.execute(action), started)
    except Exception:
        doc = {"result": "EXCEPTION", "traceback": traceback.format_exc()}
    doc["case"] = name
    doc["cgroup_exists"] = lib.cgroup_dir(cgroup).exists()
    doc["memory_high_after"] = lib.read(cgroup, "memory.high") if doc["cgroup_exists"] else None
    doc["store_entries"] = [e.name for e in store.entries()]
    return doc


def no_hook(_target: KernelFile, _data: bytes) -> None:
    return None


def new_executor(
    case: str, hook: Callable[[KernelFile, bytes], None]
) -> Tuple[Executor, StateStore, HookedIO]:
    store = StateStore(WORKDIR / case / "state.json")
    io = HookedIO(hook)
    return Executor(KernelFiles(io), store, SystemClock()), store, io


def removed_before_write() -> Dict[str, Any]:
    cgroup = f"{PARENT}/gone-before-write"
    lib.make_cgroup(cgroup, memory_max=str(256 * MIB))

    def remove_first(target: KernelFile, _data: bytes) -> None:
        if isinstance(target, CgroupFile) and target.cgroup == cgroup:
            lib.remove_cgroup(cgroup)

    executor, store, _io = new_executor("gone-before-write", remove_first)
    action = SetMemoryHigh(cgroup, 128 * MIB, None, cause(f"set memory.high of {cgroup}", cgroup))
    return run_case("removed_before_write", executor, store, action, cgroup)


def removed_between_open_and_write() -> Dict[str, Any]:
    cgroup = f"{PARENT}/gone-after-open"
    lib.make_cgroup(cgroup, memory_max=str(256 * MIB))
    real_write = os.write
    removed: List[str] = []

    def write_after_removal(fd: int, data: Any) -> int:
        # Only our memory.high fd: the rmdir lands between the executor's open() and write().
        if not removed and os.readlink(f"/proc/self/fd/{fd}").endswith(f"/{cgroup}/memory.high"):
            lib.remove_cgroup(cgroup)
            removed.append(cgroup)
        return real_write(fd, data)

    executor, store, _io = new_executor("gone-after-open", no_hook)
    action = SetMemoryHigh(cgroup, 128 * MIB, None, cause(f"set memory.high of {cgroup}", cgroup))
    os.write = write_after_removal
    try:
        doc = run_case("removed_between_open_and_write", executor, store, action, cgroup)
    finally:
        os.write = real_write
    doc["removed_mid_write"] = bool(removed)
    return doc


def restore_of_removed() -> Dict[str, Any]:
    cgroup = f"{PARENT}/gone-before-restore"
    lib.make_cgroup(cgroup, memory_max=str(256 * MIB))
    executor, store, _io = new_executor("gone-before-restore", no_hook)
    executor.execute(SetMemoryHigh(cgroup, 128 * MIB, None, cause(f"set memory.high of {cgroup}", cgroup)))
    set_to = lib.read(cgroup, "memory.high")
    lib.remove_cgroup(cgroup)
    restore = RestoreMemoryHigh(cgroup, 128 * MIB, cause(f"restore memory.high of {cgroup}", cgroup))
    doc = run_case("restore_of_removed", executor, store, restore, cgroup)
    doc["set_to_before_removal"] = set_to
    return doc


def ebusy(case: str, failures: int) -> Dict[str, Any]:
    cgroup = f"{PARENT}/{case}"
    lib.make_cgroup(cgroup, memory_max=str(256 * MIB))
    left = [failures]

    def busy(target: KernelFile, _data: bytes) -> None:
        if isinstance(target, CgroupFile) and target.cgroup == cgroup and left[0] > 0:
            left[0] -= 1
            raise KernelTransient(Path(target.describe()), os.strerror(errno.EBUSY), errno.EBUSY)

    executor, store, io = new_executor(case, busy)
    action = SetMemoryHigh(cgroup, 128 * MIB, None, cause(f"set memory.high of {cgroup}", cgroup))
    doc = run_case(case, executor, store, action, cgroup)
    doc["write_attempts"] = io.writes
    # Whatever happened, giving the value back (as the core's exit restore asks) leaves the
    # original and an empty store.
    restore = RestoreMemoryHigh(cgroup, 128 * MIB, cause(f"restore memory.high of {cgroup}", cgroup))
    doc["restore_all"] = [executor.execute(restore).result]
    doc["memory_high_after_restore_all"] = lib.read(cgroup, "memory.high")
    doc["store_entries_after_restore_all"] = [e.name for e in store.entries()]
    lib.remove_cgroup(cgroup)
    return doc


def eagain_burst(rounds: int) -> Dict[str, Any]:
    cgroup = f"{PARENT}/anon-only"
    lib.make_cgroup(cgroup, memory_max=str(256 * MIB))
    hog = lib.anon_hog(cgroup, 64)
    assert hog.stdout is not None
    hog.stdout.readline()
    executor, store, io = new_executor("anon-only", no_hook)
    cases = []
    try:
        for _ in range(rounds):
            action = Reclaim(cgroup, 128 * MIB, 5.0, cause(f"reclaim 128 MiB from {cgroup}", cgroup))
            cases.append(run_case("eagain", executor, store, action, cgroup))
    finally:
        hog.kill()
        hog.wait()
    lib.remove_cgroup(cgroup)
    return {
        "case": "eagain_burst",
        "rounds": rounds,
        "results": [c["result"] for c in cases],
        "errnos": sorted({r["errno"] for c in cases for r in c.get("records", [])}),
        "details": [c.get("records", [{}])[0].get("message", c.get("traceback", "")) for c in cases[:2]],
        "max_seconds": max(c.get("seconds", 0.0) for c in cases),
        "write_attempts": io.writes,
    }


def main() -> int:
    lib.in_vm_or_die()
    report: Dict[str, Any] = {"error": None, "cases": {}}
    cases: Dict[str, Any] = report["cases"]
    steps: List[Tuple[str, Callable[[], Dict[str, Any]]]] = [
        ("removed_before_write", removed_before_write),
        ("removed_between_open_and_write", removed_between_open_and_write),
        ("restore_of_removed", restore_of_removed),
        ("ebusy_burst", lambda: ebusy("ebusy_burst", 5)),
        ("ebusy_beyond_budget", lambda: ebusy("ebusy_beyond_budget", 10_000)),
        ("eagain_burst", lambda: eagain_burst(20)),
    ]
    try:
        for case, step in steps:
            try:
                cases[case] = step()
            except Exception:
                cases[case] = {"case": case, "result": "EXCEPTION", "traceback": traceback.format_exc()}
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        lib.remove_cgroup(PARENT)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
