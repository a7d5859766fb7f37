"""Resource bounds under cgroup churn: containers and transient units come and go all day.

The daemon runs on a fake cgroup tree with real trigger fds (socket pairs: a
removed cgroup's fd reports POLLHUP as the kernel's reports POLLERR) while
cgroups are created and removed, ``live`` of them at a time. Afterwards:

- no fd is left open for a removed cgroup (the process has exactly the fds it
  had before the churn);
- every removed cgroup is forgotten: by the watcher (fds, sampling heap), by
  the core (its state) and by the service (wake-ups), and each one that was
  watched got its WATCH_ENDED record;
- Python heap growth (tracemalloc) from the moment every name of the pool has
  been used once to the end stays under ``HEAP_GROWTH_BOUND_BYTES`` (the
  interpreter's interned-string table is left out: see ``_growth``);
- no busy loop: after every step the next deadline is in the future, so the
  real poll() would block.

CI runs the short version (600 creations, 60 live); the reliability
campaign runs ``churn(total=10_000, live=500)`` and records the figures.
"""

from __future__ import annotations

import gc
import linecache
import os
import socket
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

from remediator.clock import FakeClock
from remediator.daemon.executor import Executor
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.notify import Notifier
from remediator.daemon.service import Service
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Watcher
from remediator.kernel.capabilities import probe
from remediator.kernel.psi_trigger import PsiTrigger, TriggerCheck, TriggerRefused
from remediator.records import Record, RecordType
from remediator.settings import load_settings
from tests.fakefs import FakeKernel

# Python objects the churn may leave behind however long it runs (interned strings, caches of
# compiled regexes and of the policy, the records counter): a leak of one small object per
# removed cgroup would already exceed it at 10,000.
HEAP_GROWTH_BOUND_BYTES = 512 * 1024
# Between steps the fake clock moves this much; rescans are every second.
STEP_SEC = 0.25
POLICY = """\
target: {kind: cgroups, include: ["churn.slice/*.scope"]}
trigger: {pressure: full, stall_ms: 200, window_ms: 2000}
actions: [{kind: reclaim}]
"""


class ChurnTriggers:
    """Trigger fds for churn: one socket pair per armed cgroup, indexed by path.

    (tests/fake_triggers.FakeTriggers scans every trigger it ever armed on each
    call, which is quadratic over 10,000 cgroups.) ``refuse`` makes every arm
    fail the way a kernel without triggers does, so targets are sampled.
    """

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.peers: Dict[Path, socket.socket] = {}
        self.armed = 0

    def arm(self, path: Path, spec: PsiTrigger, cgroup_dir: Optional[Path] = None) -> int:
        if self.refuse:
            raise TriggerRefused(path, "trigger refused: Invalid argument", 22)
        near, far = socket.socketpair()
        old = self.peers.pop(path, None)
        if old is not None:
            old.close()
        self.peers[path] = far
        self.armed += 1
        return near.detach()

    def remove(self, path: Path) -> None:
        """The cgroup is removed: the watcher's end reports POLLHUP from now on."""
        peer = self.peers.pop(path, None)
        if peer is not None:
            peer.close()

    def fds(self) -> Set[int]:
        return {peer.fileno() for peer in self.peers.values()}

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()
        self.peers.clear()


# A cgroup starts being watched with one of these (by trigger, or by sampling when refused).
WATCH_START_TYPES = frozenset({RecordType.WATCH_STARTED, RecordType.FALLBACK_SAMPLING})


class CountingWriter:
    """Counts records by type, and cgroups starting and ending being watched, without
    keeping the records (the churn would otherwise measure its own log)."""

    def __init__(self) -> None:
        self.counts: Counter[RecordType] = Counter()
        self.started = 0
        self.ended = 0

    def write(self, record: Record) -> None:
        self.counts[record.type] += 1
        if record.cgroup is None:
            return
        if record.type in WATCH_START_TYPES:
            self.started += 1
        elif record.type == RecordType.WATCH_ENDED:
            self.ended += 1


@dataclass
class ChurnReport:
    mode: str
    created: int
    removed: int
    live: int
    steps: int
    watched: int
    watch_ended: int
    fds_before: int
    fds_peak: int
    fds_after: int
    heap_growth_bytes: int
    heap_peak_bytes: int
    busy_steps: int
    leftover_targets: int
    leftover_core_states: int
    leftover_wakeups: int
    leftover_sample_heap: int
    records: Dict[str, int] = field(default_factory=dict)


def _own_fds(triggers: ChurnTriggers) -> int:
    """The daemon's fds: the process's, minus the test's trigger peers."""
    return len(set(map(int, os.listdir("/proc/self/fd"))) - triggers.fds())


def _heap() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot()


def _is_string_interning(statistic: tracemalloc.StatisticDiff) -> bool:
    frame = statistic.traceback[0]
    return "sys.intern(" in linecache.getline(frame.filename, frame.lineno)


def _growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    """Bytes allocated and still held since ``before``, leaving out the interpreter's table of
    interned strings: pathlib interns every path component, and the table grows in steps with
    the number of strings alive at once (sized by live cgroups, not by cgroups ever seen)."""
    return sum(s.size_diff for s in after.compare_to(before, "lineno") if not _is_string_interning(s))


def churn(base: Path, total: int, live: int, mode: str = "triggers", per_step: int = 0) -> ChurnReport:
    """Create ``total`` cgroups, ``live`` at a time, under a running daemon; then remove the rest."""
    kernel = FakeKernel(base / "kernel")
    kernel.add_cgroup("churn.slice")
    policies = base / "policies.d"
    policies.mkdir()
    (policies / "churn.yaml").write_text(POLICY)
    settings = load_settings(
        None,
        False,
        {"cgroup_root": kernel.cgroup_root, "proc_root": kernel.proc_root, "policies_dir": policies,
         "state_file": base / "run" / "state.json", "rescan_interval_sec": 1, "sampling_interval_sec": 2},
        environ={},
    )  # fmt: skip
    clock = FakeClock()
    triggers = ChurnTriggers(refuse=mode == "sampling")
    writer = CountingWriter()
    watcher = Watcher(kernel.roots, clock, settings.sampling_interval_sec, arm=triggers.arm)
    service = Service(
        settings=settings, clock=clock, writer=writer, notifier=Notifier(environ={}),
        executor=Executor(KernelFiles.under(kernel.roots), StateStore(settings.state_file), clock),
        watcher=watcher,
        capabilities=probe(kernel.roots, trigger_checker=lambda _p, _s: TriggerCheck(True, "", None)),
    )  # fmt: skip
    batch = per_step or max(1, live // 20)
    # Names are reused after 3 x live creations (a restarted service keeps its name), never
    # while the previous holder is alive.
    pool = 3 * live
    alive: List[str] = []
    created = removed = steps = busy = 0
    tracemalloc.start()
    try:
        service.start()
        fds_before = fds_peak = _own_fds(triggers)
        heap_before: Optional[tracemalloc.Snapshot] = None

        def step() -> None:
            nonlocal steps, busy, fds_peak
            clock.advance(STEP_SEC)
            service.step()
            steps += 1
            if service.next_deadline() <= clock.monotonic():
                busy += 1
            fds_peak = max(fds_peak, _own_fds(triggers))

        def remove(name: str) -> None:
            triggers.remove(kernel.roots.cgroup_file(name, "memory.pressure"))
            for child in (kernel.cgroup_root / name).iterdir():
                child.unlink()
            (kernel.cgroup_root / name).rmdir()

        while created < total:
            for _ in range(batch):
                if created >= total:
                    break
                if len(alive) >= live:
                    remove(alive.pop(0))
                    removed += 1
                name = f"churn.slice/c{created % pool}.scope"
                kernel.add_cgroup(name, current=1 << 20)
                alive.append(name)
                created += 1
            step()
            if heap_before is None and created >= pool:
                # The baseline once every name has been used: one-time growth (the
                # interpreter's interned-string table sizing up to the live names,
                # caches) is not a leak; what grows after this point is.
                heap_before = _heap()
        while alive:
            remove(alive.pop(0))
            removed += 1
        for _ in range(int(2 * settings.rescan_interval_sec / STEP_SEC)):
            step()
        heap_after = _heap()
        heap_growth = _growth(heap_before if heap_before is not None else heap_after, heap_after)
        heap_peak = tracemalloc.get_traced_memory()[1]
        fds_after = _own_fds(triggers)
        core_states = [k for k in service.state.targets if k.cgroup is not None]
        sample_heap = len(watcher._sample_heap)  # the one structure with no public size
        return ChurnReport(
            mode=mode, created=created, removed=removed, live=live, steps=steps,
            watched=writer.started, watch_ended=writer.ended,
            fds_before=fds_before, fds_peak=fds_peak, fds_after=fds_after,
            heap_growth_bytes=heap_growth, heap_peak_bytes=heap_peak,
            busy_steps=busy, leftover_targets=watcher.stats().armed + watcher.stats().sampling,
            leftover_core_states=len(core_states), leftover_wakeups=len(service.wakeups),
            leftover_sample_heap=sample_heap,
            records={t.name: n for t, n in sorted(writer.counts.items(), key=lambda kv: kv[0].name)},
        )  # fmt: skip
    finally:
        tracemalloc.stop()
        watcher.close()
        triggers.close()


@pytest.mark.parametrize("mode", ["triggers", "sampling"])
def test_churn_leaves_no_fd_state_or_heap_behind_and_never_spins(tmp_path: Path, mode: str) -> None:
    report = churn(tmp_path, total=600, live=60, mode=mode)

    assert report.created == report.removed == 600
    # Every cgroup that was watched was let go, with a record.
    assert report.watched > 300
    assert report.watch_ended == report.watched
    assert (report.leftover_targets, report.leftover_core_states, report.leftover_wakeups) == (0, 0, 0)
    # No fd survives its cgroup; at most one trigger fd per live cgroup meanwhile.
    assert report.fds_after == report.fds_before
    assert report.fds_peak <= report.fds_before + (
        report.live + report.live // 20 if mode == "triggers" else 0
    )
    # The sampling heap keeps at most the live entries plus its compaction slack.
    assert report.leftover_sample_heap <= 64
    assert report.heap_growth_bytes < HEAP_GROWTH_BOUND_BYTES, report
    assert report.busy_steps == 0
