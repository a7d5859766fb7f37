"""The daemon's side of the metrics: what it tells ``remediator.metrics.Metrics`` and when it writes.

The service hands every record it writes to ``observe`` (the counters are
derived from the records, see ``remediator.metrics``), and before each write
``refresh`` reads the states the gauges show from the service's own
structures: the watcher (targets by mode), the decision core's state (values
owned, cgroups under action and their last full pressure) and the policy set.

Writes: at most once per ``metrics_interval_sec`` from the loop (``write_if_due``),
and unconditionally at stop and at the end of ``--once`` (``write_now``). A
failed write never stops the daemon: the first failure is one METRICS_UNWRITABLE
record (warning, with the file and errno), later failures with the same error
are only counted (``remediator_textfile_write_failures_total``, visible once a
write succeeds again), and the first success after failures is one record
saying so. A different error is recorded again. So a node without
node_exporter's directory gets one record, not one every 15 s.

Also here: ``annotate``, the one place a record gets the identity of its
cgroup (``REMEDIATOR_UNIT``, ``REMEDIATOR_POD_*``, ...) and a declined record
without a reason of the core gets ``REASON=other``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple

from remediator.clock import Clock
from remediator.core.reasons import REASON_FIELD, DeclineReason
from remediator.core.state import CoreState, TargetKey
from remediator.identity import Identity
from remediator.metrics import CgroupPressure, Metrics, MetricsWriteError, PolicyState, WatchMode
from remediator.policy.loader import PolicySet
from remediator.readings import CgroupSnapshot
from remediator.records import PRIORITY_NOTICE, PRIORITY_WARNING, Knob, Record, RecordType, Result
from remediator.settings import Settings
from remediator.text import plural

Identify = Callable[[str], Identity]

# Extra field naming the metrics file on the records about writing it.
TEXTFILE_FIELD = "METRICS_TEXTFILE"

_WATCH_MODES = {"armed": WatchMode.TRIGGER, "sampling": WatchMode.SAMPLING}


def annotate(record: Record, identify: Identify) -> Record:
    """The record with its cgroup's identity fields and, when declined without one, ``REASON=other``.

    Fields the record already carries win: an identity field never shadows one of the record's own.
    """
    added: Dict[str, str] = {}
    if record.cgroup:
        added.update(identify(record.cgroup).journal_fields())
    if record.result == Result.DECLINED and REASON_FIELD not in record.extra:
        added[REASON_FIELD] = DeclineReason.OTHER.value
    if not added:
        return record
    return replace(record, extra={**added, **record.extra})


def policy_counts(policy_set: PolicySet) -> Dict[PolicyState, int]:
    """Policy files by state: loaded (enabled), disabled, rejected (files with an issue)."""
    enabled = sum(1 for p in policy_set.policies if p.enabled)
    return {
        PolicyState.LOADED: enabled,
        PolicyState.DISABLED: len(policy_set.policies) - enabled,
        PolicyState.REJECTED: len({issue.file for issue in policy_set.issues}),
    }


def watched_counts(modes: Iterable[Tuple[TargetKey, Optional[str]]]) -> Dict[Tuple[str, WatchMode], int]:
    counts: Dict[Tuple[str, WatchMode], int] = {}
    for key, mode in modes:
        watch_mode = _WATCH_MODES.get(mode or "")
        if watch_mode is not None:
            counts[(key.policy, watch_mode)] = counts.get((key.policy, watch_mode), 0) + 1
    return counts


def owned_counts(state: CoreState, dry_run: bool) -> Dict[str, int]:
    """Values changed and not given back, per knob. A dry-run changed none: the values the core holds
    as ours are its overlay's (the mode is the executor's, ``Service.dry_run``; the core has none)."""
    memory_high = sum(1 for t in state.targets.values() if t.memory_high is not None)
    vfs = int(state.node.vfs_cache_pressure is not None)
    return {
        Knob.MEMORY_HIGH.value: 0 if dry_run else memory_high,
        Knob.VFS_CACHE_PRESSURE.value: 0 if dry_run else vfs,
    }


def cgroups_under_action(state: CoreState) -> Dict[str, float]:
    """Cgroup -> its last full avg10, for cgroups with a memory.high owned (or, in dry-run, that
    would be) or a rung waiting for its verification: the ladder is active."""
    out: Dict[str, float] = {}
    for key, target in state.targets.items():
        if key.cgroup is None or (target.memory_high is None and target.rung is None):
            continue
        snapshot = target.last_snapshot
        if not isinstance(snapshot, CgroupSnapshot):
            continue
        full = snapshot.pressure.full.avg10 if snapshot.pressure.full is not None else 0.0
        out[key.cgroup] = max(full, out.get(key.cgroup, 0.0))
    return out


class MetricsFeed:
    """Feeds a ``Metrics`` from the service and writes its textfile (``path`` None: never written)."""

    def __init__(self, settings: Settings, clock: Clock, kernel: Optional[str] = None) -> None:
        self.metrics = Metrics(
            dry_run=settings.dry_run,
            interval_sec=settings.metrics_interval_sec,
            max_cgroup_series=settings.metrics_max_cgroup_series,
            kernel=kernel,
        )
        self.path: Optional[Path] = settings.metrics_textfile
        self._clock = clock
        self._failing: Optional[str] = None  # the error of the failing writes, once recorded
        self._failures = 0  # failed writes since the last success

    def configure(self, settings: Settings) -> None:
        """Apply reloaded settings: the file, the interval (from the next write on) and the cap."""
        self.metrics.interval_sec = settings.metrics_interval_sec
        self.metrics.max_cgroup_series = settings.metrics_max_cgroup_series
        if settings.metrics_textfile != self.path:
            self.path = settings.metrics_textfile
            self._failing = None
            self._failures = 0

    def observe(self, record: Record) -> None:
        self.metrics.observe(record)

    def policies_loaded(self, policy_set: PolicySet) -> None:
        """A load or a successful reload: the policy states, and its time."""
        self.metrics.set_policies(policy_counts(policy_set))
        self.metrics.reload_succeeded(self._clock.wall())

    def reload_refused(self, running: Mapping[PolicyState, int], attempt: Optional[PolicySet]) -> None:
        """A reload refused as a whole: the running policies stay, the attempt's rejected files show."""
        counts = dict(running)
        if attempt is not None:
            counts[PolicyState.REJECTED] = policy_counts(attempt)[PolicyState.REJECTED]
        self.metrics.set_policies(counts)
        self.metrics.reload_failed()

    def refresh(
        self,
        modes: Iterable[Tuple[TargetKey, Optional[str]]],
        state: CoreState,
        identify: Identify,
        dry_run: bool,
    ) -> None:
        """The gauges from the service's state now (``dry_run``: the executor's mode)."""
        self.metrics.set_watched_targets(watched_counts(modes))
        self.metrics.set_owned_values(owned_counts(state, dry_run))
        self.metrics.set_cgroup_pressure(
            CgroupPressure(identify(cgroup), full) for cgroup, full in cgroups_under_action(state).items()
        )

    def next_due_at(self) -> Optional[float]:
        """When the loop should wake for the next write (monotonic); None when metrics are off."""
        if self.path is None:
            return None
        due = self.metrics.next_due_at()
        return self._clock.monotonic() if due is None else due

    def write_if_due(self, refresh: Callable[[], None]) -> Optional[Record]:
        """Write when the interval has passed, calling ``refresh`` first; the record to emit, if any."""
        if self.path is None or not self.metrics.due(self._clock.monotonic()):
            return None
        refresh()
        return self._write(self.path)

    def write_now(self) -> Optional[Record]:
        """Write whatever the interval (at stop, at the end of --once)."""
        if self.path is None:
            return None
        return self._write(self.path)

    def _write(self, path: Path) -> Optional[Record]:
        try:
            self.metrics.write_textfile(path)
        except MetricsWriteError as exc:
            self._failures += 1
            if self._failing == exc.message:
                return None
            self._failing = exc.message
            return Record(
                RecordType.METRICS_UNWRITABLE,
                f"cannot write the metrics file {path}: {exc.message}; the next attempts are counted, not "
                'recorded (metrics_textfile: "" switches the metrics off)',
                result=Result.FAILED.value,
                priority=PRIORITY_WARNING,
                extra={TEXTFILE_FIELD: str(path)},
            )
        if self._failing is None:
            return None
        failures, self._failures, self._failing = self._failures, 0, None
        return Record(
            RecordType.METRICS_UNWRITABLE,
            f"the metrics file {path} is written again, after {plural(failures, 'failed attempt')}",
            # Not "applied": that is an action's word, and dry-run would present it as "would".
            result="written",
            priority=PRIORITY_NOTICE,
            extra={TEXTFILE_FIELD: str(path)},
        )


__all__ = [
    "TEXTFILE_FIELD",
    "MetricsFeed",
    "annotate",
    "cgroups_under_action",
    "owned_counts",
    "policy_counts",
    "watched_counts",
]
