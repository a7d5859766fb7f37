"""A long memory.reclaim write, interrupted: the cgroup removed during it, and SIGTERM during it.

Both need a reclaim that takes a while: a cgroup with CACHE_MIB of clean page
cache (a file on the ext4 drive, read by a process in a ``cache`` child),
reclaimed in the executor's 64 MiB chunks.

- ``removed_during_reclaim`` (the executor in this process): the cgroup is
  removed as soon as the first chunk's write() has started. The kernel makes
  the rmdir wait for that write (kernfs drains active writers before removing
  a directory); the executor's next chunk finds the cgroup gone. Reported: the
  outcome, how long rmdir waited, and that the store holds nothing.
- ``sigterm_during_reclaim`` (the daemon as a process): pressure from a
  ``thrash`` child makes the daemon reclaim; this script watches the ``cache``
  child's page cache and sends SIGTERM the moment it starts to shrink (only
  the reclaim takes it), i.e. while the reclaim's chunks are being written;
  the reclaim's record, written when its loop ends, arriving after the signal
  confirms it. A signal during the write makes the kernel's reclaim return
  EINTR; Python retries the write after running the handler (which only sets a
  flag), so the reclaim loop ends within its budget, and the daemon stops
  cleanly (exit 0, DAEMON_STOPPING, nothing left changed).

Usage: ``python -m tests.vm.scenarios_faults.reclaim_races DEVICE CACHE_MIB``
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List

from remediator.clock import SystemClock
from remediator.daemon.confined_io import ConfinedIO, KernelFile
from remediator.daemon.executor import Executor, Outcome
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.state_store import StateStore
from remediator.kernel.roots import KernelRoots
from remediator.knobs.reclaim import Reclaim
from remediator.records import Record, RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import for_report, of_type

NAME = "reclaim_races"
WORKDIR = Path("/tmp") / NAME
DISK = Path("/tmp/vmt-reclaim-disk")
CACHE_FILE = "cache.bin"
THRASH_FILE = "thrash.bin"
THRASH_MIB = 48
MIB = 1 << 20
WAIT_SEC = 90.0
RECLAIM_SEEN_BYTES = 8 * MIB


def disk_files(cache_mib: int) -> Dict[str, int]:
    """What the host puts on the drive (file name -> MiB)."""
    return {CACHE_FILE: cache_mib, THRASH_FILE: THRASH_MIB}


def cached_cgroup(name: str, cache_mib: int) -> None:
    """``name`` with ``cache_mib`` of clean page cache charged to it (through its ``cache`` child)."""
    lib.make_cgroup(name, memory_max=str((cache_mib + 256) * MIB))
    lib.make_cgroup(f"{name}/cache")
    # Cached pages stay charged to whoever read them first, even a removed cgroup: start clean.
    lib.drop_caches()
    lib.read_file_into_cache(f"{name}/cache", DISK / CACHE_FILE)


class SignallingIO(ConfinedIO):
    """The real writer; sets ``writing`` when a write starts."""

    def __init__(self, roots: KernelRoots) -> None:
        super().__init__(roots)
        self.writing = threading.Event()

    def write(self, target: KernelFile, data: bytes) -> None:
        self.writing.set()
        super().write(target, data)


def removed_during_reclaim(cache_mib: int) -> Dict[str, Any]:
    cgroup = "vmt-race/removed"
    cached_cgroup(cgroup, cache_mib)
    doc: Dict[str, Any] = {"file_bytes_before": lib.memory_stat(cgroup).get("file", 0)}
    roots = KernelRoots(lib.CGROUP_ROOT, Path("/proc"))
    io = SignallingIO(roots)
    store = StateStore(WORKDIR / "removed" / "state.json")
    executor = Executor(KernelFiles(io), store, SystemClock())
    cause = Record(RecordType.ACTION_APPLIED, f"reclaim from {cgroup}", policy="races", cgroup=cgroup)
    outcome: List[Outcome] = []
    failure: List[str] = []

    def reclaim() -> None:
        try:
            outcome.append(executor.execute(Reclaim(cgroup, cache_mib * MIB, 30.0, cause)))
        except Exception:
            failure.append(traceback.format_exc())

    worker = threading.Thread(target=reclaim)
    started = time.monotonic()
    worker.start()
    doc["write_started"] = io.writing.wait(WAIT_SEC)
    removing = time.monotonic()
    lib.remove_cgroup(cgroup)
    doc["rmdir_waited_sec"] = round(time.monotonic() - removing, 3)
    worker.join(WAIT_SEC)
    doc["reclaim_sec"] = round(time.monotonic() - started, 3)
    doc["exception"] = failure[0] if failure else None
    if outcome:
        record = outcome[0].records[0]
        doc.update(
            result=outcome[0].result, message=record.message, errno=record.errno, extra=dict(record.extra)
        )
    doc["store_entries"] = [e.name for e in store.entries()]
    doc["cgroup_exists"] = lib.cgroup_dir(cgroup).exists()
    return doc


def sigterm_during_reclaim(cache_mib: int) -> Dict[str, Any]:
    cgroup = "vmt-race/sigterm"
    cached_cgroup(cgroup, cache_mib)
    lib.make_cgroup(f"{cgroup}/thrash", memory_max=str(16 * MIB))
    policy = lib.policy_yaml(
        [cgroup],
        "  - kind: reclaim\n    fraction: 1.0\n    min_bytes: 1Mi\n    timeout_sec: 30\n",
        pressure="some",
        stall_ms=50,
        window_ms=1000,
        verify_sec=60,
        calm_sec=600,
    )
    daemon = lib.Daemon(WORKDIR / "sigterm", {"races": policy}, settings={"rescan_interval_sec": 300})
    doc: Dict[str, Any] = {"original_memory_high": lib.read(cgroup, "memory.high")}
    started = time.monotonic()
    try:
        daemon.start()
        daemon.wait_for(of_type(RecordType.WATCH_STARTED, cgroup), WAIT_SEC)
        lib.read_file_in_loop(f"{cgroup}/thrash", DISK / THRASH_FILE)
        assert daemon.proc is not None
        # Only the daemon's reclaim takes the cache child's pages (it is far below any limit):
        # the moment they start to go, the reclaim is under way.
        baseline = lib.memory_stat(f"{cgroup}/cache").get("file", 0)
        deadline = time.monotonic() + WAIT_SEC
        reclaim_seen = False
        while time.monotonic() < deadline and daemon.proc.poll() is None:
            if lib.memory_stat(f"{cgroup}/cache").get("file", 0) < baseline - RECLAIM_SEEN_BYTES:
                reclaim_seen = True
                break
            time.sleep(0.001)
        daemon.signal(signal.SIGTERM)
        signalled = time.monotonic()
        doc["reclaim_seen_before_signal"] = reclaim_seen
        doc["cache_bytes_at_signal"] = lib.memory_stat(f"{cgroup}/cache").get("file", 0)
        doc["cache_bytes_before"] = baseline
        doc["signalled_at_sec"] = round(signalled - started, 3)
        doc["exit_code"] = daemon.stop(timeout_sec=WAIT_SEC)
        doc["exit_after_signal_sec"] = round(time.monotonic() - signalled, 3)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill9()
        lib.kill_cgroup(f"{cgroup}/thrash")
    records = for_report(daemon, started)
    reclaims = [r for r in records if r.get("REMEDIATOR_ACTION") == "reclaim" and r.get("REMEDIATOR_RESULT")]
    doc["reclaim_records"] = [
        {k: r.get(k) for k in ("RECORD_TYPE", "REMEDIATOR_RESULT", "REMEDIATOR_ERRNO", "MESSAGE",
                               "REMEDIATOR_RECLAIM_COMPLETED_BYTES", "ARRIVED_SEC")}
        for r in reclaims
    ]  # fmt: skip
    # The reclaim's record is written when its loop ends: arriving after the signal, it was under
    # way when the signal came.
    doc["signalled_during_reclaim"] = bool(
        doc.get("reclaim_seen_before_signal")
        and reclaims
        and float(reclaims[0]["ARRIVED_SEC"]) >= float(doc["signalled_at_sec"])
    )
    doc["stopping_recorded"] = any(r["RECORD_TYPE"] == "DAEMON_STOPPING" for r in records)
    doc["failed_records"] = [r["MESSAGE"] for r in records if r["RECORD_TYPE"] == "ACTION_FAILED"]
    doc["final_memory_high"] = lib.read(cgroup, "memory.high")
    return doc


def main(device: str, cache_mib: int) -> int:
    lib.in_vm_or_die()
    report: Dict[str, Any] = {"error": None, "cache_mib": cache_mib}
    try:
        lib.mount_drive(device, DISK)
        for case, run in (("removed_during_reclaim", removed_during_reclaim),
                          ("sigterm_during_reclaim", sigterm_during_reclaim)):  # fmt: skip
            try:
                report[case] = run(cache_mib)
            except Exception:
                report[case] = {"exception": traceback.format_exc()}
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        lib.remove_cgroup("vmt-race")
        subprocess.run(["umount", str(DISK)], check=False)
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
