"""Running the daemon's own loop over a trace on a simulated clock.

Nothing here decides anything. The replay builds the daemon's ``Service``
exactly as ``remediator run --dry-run`` does (the same settings, policies,
watcher, executor and decision core) with four stand-ins at the edges:

- the kernel roots are a private temporary tree holding what the trace says
  the kernel said (``remediator.replay.tree``);
- the clock is a ``FakeClock`` on the recorder's monotonic time (so the
  records' ``*_MONOTONIC_US`` fields compare with the recorded daemon's);
- the watcher's trigger fds and poll are played from the trace
  (``remediator.replay.triggers``);
- the records are captured with the simulated time they were written at.

The executor runs in dry-run against the private tree: nothing is written
anywhere, and the records are the ones dry-run produces (``would ...``).

The loop moves the clock from event to event, earliest first: the next
trace record (its readings are written into the tree), the next trigger
firing, the next deadline of the service (a re-check the core asked for, a
rescan) and the next sampling time of a target the kernel would not arm.
At each of the latter the service takes one ``step()``, as the daemon does
when ``poll()`` returns. The replay ends at the trace's end.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Set, Tuple

from remediator.clock import FakeClock
from remediator.daemon.notify import Notifier
from remediator.daemon.run import build_executor
from remediator.daemon.service import Service
from remediator.daemon.watcher import Watcher
from remediator.kernel.capabilities import probe
from remediator.kernel.psi_trigger import TriggerCheck
from remediator.records import Record, presented
from remediator.replay.curves import StallCurves
from remediator.replay.tree import SimulatedTree
from remediator.replay.triggers import Firing, ScriptedTriggers
from remediator.settings import Settings
from remediator.trace.format import (
    CgroupRemoved,
    CgroupSample,
    NodeSample,
    TraceHeader,
    TraceItem,
    TraceTruncation,
    TriggerFired,
)
from remediator.trace.reader import read_trace

# The first sample of a trace is the tree the daemon starts on: the records within half an
# interval of the first one (one sample of `remediator record` is read within microseconds).
_DEFAULT_INTERVAL_SEC = 1.0
# A service that asks to be woken at the same simulated time over and over is a bug, not a replay.
_MAX_STEPS_AT_ONE_TIME = 1000


class ReplayStuck(RuntimeError):
    """The service kept asking to be woken at the same simulated time."""


@dataclass(frozen=True)
class TimedRecord:
    """A record as the replayed daemon wrote it (presented: dry-run's ``would``), and when."""

    t: float  # seconds since the trace's start
    wall: float  # seconds since the epoch
    record: Record


@dataclass(frozen=True)
class Owned:
    """A value the replayed daemon would own at the end (would have written, not yet restored)."""

    policy: str
    cgroup: Optional[str]  # None: the node (vm.vfs_cache_pressure)
    knob: str
    ours: int
    before: Optional[int]


@dataclass
class ReplayResult:
    header: TraceHeader
    records: List[TimedRecord] = field(default_factory=list)
    firings: List[Firing] = field(default_factory=list)  # times relative to the trace's start
    owned: List[Owned] = field(default_factory=list)
    recorded_cgroups: Set[str] = field(default_factory=set)
    unrecorded_targets: List[str] = field(default_factory=list)
    truncation: Optional[TraceTruncation] = None
    end_t: float = 0.0
    synthesized_triggers: bool = True


class _TimingWriter:
    """The service's record writer: keeps each record with the simulated time it was written at."""

    def __init__(self, clock: FakeClock, start_monotonic: float, paths: Tuple[Tuple[str, str], ...]) -> None:
        self._clock = clock
        self._start = start_monotonic
        self._paths = paths
        self.records: List[TimedRecord] = []

    def write(self, record: Record) -> None:
        now = self._clock.monotonic()
        shown = _as_recorded(presented(record), self._paths)
        self.records.append(TimedRecord(now - self._start, self._clock.wall(), shown))


def _as_recorded(record: Record, paths: Tuple[Tuple[str, str], ...]) -> Record:
    """The record with the private tree's roots named as the recorded node's (/sys/fs/cgroup, /proc):
    the capabilities and watch records name files, and a temporary folder's name means nothing."""

    def swap(text: str) -> str:
        for private, public in paths:
            text = text.replace(private, public)
        return text

    return replace(
        record,
        message=swap(record.message),
        evidence={key: swap(value) for key, value in record.evidence.items()},
        extra={key: swap(value) for key, value in record.extra.items()},
    )


def _trigger_check(header: TraceHeader, short: bool) -> TriggerCheck:
    accepted = header.capabilities.short_window_triggers if short else header.capabilities.triggers_accepted
    if accepted is False:
        return TriggerCheck(False, "refused on the recorded node")
    return TriggerCheck(True, "")


def _synthesis(
    header: TraceHeader, items: Sequence[TraceItem]
) -> Tuple[bool, Callable[[Optional[str]], bool]]:
    """Whether any trigger events are worked out from the counters, and for which cgroups."""
    recorded = header.triggers
    if recorded is not None:
        # `remediator record` armed triggers: an armed target's events are its records, and no others.
        def worked_out(cgroup: Optional[str]) -> bool:
            return not recorded.events_recorded(cgroup)

        return any(not t.armed for t in recorded.targets), worked_out
    # No such field (an older trace, --no-triggers, the flight recorder's): trigger records, if any,
    # are every event; without any, every event is worked out from the counters.
    synthesize = not any(isinstance(item, TriggerFired) for item in items)
    return synthesize, lambda _cgroup: synthesize


class _Replay:
    def __init__(
        self, header: TraceHeader, items: Sequence[TraceItem], settings: Settings, base: Path
    ) -> None:
        self.header = header
        self.items = items
        self.curves = StallCurves()
        self.incarnations = [self._incarnation(item) for item in items]
        start = header.monotonic_at(items[0].t if items else 0.0)
        self.clock = FakeClock(start=start, wall_offset=header.start_wall - header.start_monotonic)
        self.tree = SimulatedTree(base, header, self.curves)
        roots = self.tree.roots
        self.settings = settings.model_copy(
            update={"dry_run": True, "cgroup_root": roots.cgroup_root, "proc_root": roots.proc_root,
                    "state_file": base / "run" / "state.json", "log_target": "stderr"}
        )  # fmt: skip
        synthesize, synthesize_for = _synthesis(header, items)
        self.triggers = ScriptedTriggers(
            roots, self.clock, self.curves, header.capabilities, self.tree.incarnation, synthesize_for
        )
        paths = ((str(roots.cgroup_root), "/sys/fs/cgroup"), (str(roots.proc_root), "/proc"))
        self.writer = _TimingWriter(self.clock, header.start_monotonic, paths)
        self.watcher = Watcher(
            roots,
            self.clock,
            self.settings.sampling_interval_sec,
            arm=self.triggers.arm,
            poll_factory=self.triggers.poll_factory,
            close_fd=self.triggers.close_fd,
        )
        # The daemon's own choice, on settings that say dry-run: a replay writes nothing.
        executor = build_executor(self.settings, self.clock, sleep=lambda _seconds: None)
        capabilities = probe(
            roots, trigger_checker=lambda _path, spec: _trigger_check(header, spec.window_us < 2_000_000)
        )
        capabilities = replace(capabilities, memory_reclaim_present=header.capabilities.memory_reclaim)
        self.service = Service(
            settings=self.settings,
            clock=self.clock,
            writer=self.writer,
            notifier=Notifier(environ={}),
            executor=executor,
            watcher=self.watcher,
            capabilities=capabilities,
        )
        self.result = ReplayResult(header=header, synthesized_triggers=synthesize)

    def _incarnation(self, item: TraceItem) -> int:
        if isinstance(item, CgroupSample):
            return self.curves.sample(
                self.header.monotonic_at(item.t), item.snapshot.cgroup, item.snapshot.pressure
            )
        if isinstance(item, NodeSample):
            return self.curves.sample(self.header.monotonic_at(item.t), None, item.snapshot.pressure)
        if isinstance(item, CgroupRemoved):
            self.curves.removed(item.cgroup)
        return 0

    # ---- moving the clock ------------------------------------------------
    def _advance_to(self, at: float) -> None:
        now = self.clock.monotonic()
        if at > now:
            self.clock.advance(at - now)

    def _apply(self, index: int) -> bool:
        """Write trace record ``index`` into the tree; True when the service must look at once."""
        item = self.items[index]
        now = self.clock.monotonic()
        if isinstance(item, CgroupSample):
            self.tree.cgroup(item.snapshot, self.incarnations[index], now)
        elif isinstance(item, NodeSample):
            self.tree.node(item.snapshot, self.incarnations[index], now)
        elif isinstance(item, CgroupRemoved):
            self.tree.removed(item.cgroup)
            self.triggers.removed(item.cgroup)
            return True
        elif isinstance(item, TriggerFired):
            self.triggers.fire_recorded(item.cgroup, now)
            return True
        return False

    def _next_other(self) -> float:
        candidates: List[float] = [self.service.next_deadline()]
        for extra in (self.watcher.next_sample_at(), self.triggers.next_fire()):
            if extra is not None:
                candidates.append(extra)
        return min(candidates)

    def _step(self) -> None:
        now = self.clock.monotonic()
        self.tree.refresh(now)
        self.triggers.fire_due(now)
        self.service.step()

    def run(self) -> ReplayResult:
        header, items = self.header, self.items
        first_t = items[0].t if items else 0.0
        interval = header.interval_sec or _DEFAULT_INTERVAL_SEC
        index = 0
        # The first sample: the tree the daemon starts on.
        while index < len(items) and items[index].t < first_t + interval / 2:
            self._advance_to(header.monotonic_at(items[index].t))
            if not isinstance(items[index], TriggerFired):
                self._apply(index)
            index += 1
        self.service.start()
        last = items[-1] if items else None
        end_t = last.t if last is not None else first_t
        end_at = header.monotonic_at(end_t)
        steps_here, stepped_at = 0, None
        while True:
            other = self._next_other()
            item_at = header.monotonic_at(items[index].t) if index < len(items) else None
            if item_at is not None and item_at <= other:
                self._advance_to(item_at)
                if self._apply(index):
                    self._step()
                index += 1
                continue
            if other > end_at:
                break
            self._advance_to(other)
            now = self.clock.monotonic()
            steps_here = steps_here + 1 if stepped_at == now else 1
            stepped_at = now
            if steps_here > _MAX_STEPS_AT_ONE_TIME:
                raise ReplayStuck(
                    f"the service asked to be woken at t={now - header.start_monotonic:.6f} s again and again"
                )
            self._step()
        self.result.end_t = end_t
        # What the daemon holds back as repeats it writes as counts at its stop: so does the replay.
        self.service.flush_held_records()
        return self._finish()

    def _finish(self) -> ReplayResult:
        result = self.result
        start = self.header.start_monotonic
        result.records = self.writer.records
        result.firings = [Firing(f.t - start, f.cgroup) for f in self.triggers.firings]
        result.recorded_cgroups = set(self.tree.recorded)
        state = self.service.state
        for key, target in state.targets.items():
            if target.memory_high is not None:
                owned = target.memory_high
                result.owned.append(Owned(key.policy, key.cgroup, "memory_high", owned.ours, owned.before))
        node = state.node
        if node.vfs_cache_pressure is not None and node.vfs_owner is not None:
            vfs = node.vfs_cache_pressure
            result.owned.append(
                Owned(node.vfs_owner.policy, None, "vfs_cache_pressure", vfs.ours, vfs.before)
            )
        targets = [key.cgroup for key in self.watcher.keys()]  # noqa: SIM118 - a method, not a dict
        result.unrecorded_targets = self.tree.unrecorded(targets)
        return result


def replay_trace(path: Path, settings: Settings, workdir: Optional[Path] = None) -> ReplayResult:
    """Replay the trace at ``path`` with ``settings`` (their policies directory and limits).

    Raises ``TraceError`` (located) for a trace that cannot be read. The private tree lives
    in a temporary folder under ``workdir`` (default: the system's), removed afterwards.
    """
    header, items, truncation = read_trace(path)
    with tempfile.TemporaryDirectory(prefix="remediator-replay-", dir=workdir) as base:
        replay = _Replay(header, items, settings, Path(base))
        result = replay.run()
    result.truncation = truncation
    return result


__all__ = ["Owned", "ReplayResult", "ReplayStuck", "TimedRecord", "replay_trace"]
