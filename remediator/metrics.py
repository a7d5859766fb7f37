"""Prometheus metrics, written as a file for node_exporter's textfile collector.

The daemon feeds a ``Metrics`` object two ways:

- ``observe(record)`` for every audit record it writes: the counters are
  derived from the records, so a metric can never say something the journal
  does not (rules below);
- setters for what is a state rather than an event: the targets watched, the
  values owned, the policies loaded, reloads, and the full pressure of the
  cgroups currently under action.

``write_textfile(path)`` renders the Prometheus text format and replaces the
file atomically (a temporary file in the same directory, fsync'd, renamed
over it), so node_exporter never reads half a file. ``due(now)`` says when
the next write is wanted: at most once per ``interval_sec``.

There is no listening socket: a root daemon on every node opens no port
(nothing to authenticate, to firewall or to expose to a pod network), and
node_exporter, already on the node, already scraped, serves the file.

**From records to counters** (``observe``):

- ``remediator_actions_total{policy,action,result,dry_run}``: records with an
  action and one of the results applied, would, partial, failed, refused,
  stood_back, gone, that are not restores. A STOOD_BACK record counts as
  ``stood_back`` whatever its result (its write is a release of ownership).
  A STATE_UNWRITABLE record counts only when its result is ``refused`` (it is
  then the action's only record; otherwise it accompanies another record).
- ``remediator_restores_total{policy,result}``: records whose result is
  restored, not_restored or recovered, or whose type is ROLLED_BACK,
  STATE_RECOVERED or BACKED_OFF (so dry-run's ``would`` restores count too).
- ``remediator_reclaimed_bytes_total{policy}``: the ``RECLAIM_COMPLETED_BYTES``
  extra field of records that are not dry-run.
- ``remediator_declines_total{policy,action,reason}``: records whose result is
  ``declined``; ``reason`` is the ``REASON`` extra field, which the core sets
  to one of a small fixed set (``core/reasons.py``: ``DeclineReason``); a raw
  key there is mapped by ``decline_reason``, anything else (a decline without
  the field) is ``other``, so the label's cardinality stays fixed.
- ``remediator_pressure_events_total{policy}``: PRESSURE_CONFIRMED records.
- ``remediator_backoffs_total{policy}``: BACKED_OFF records.

**Cardinality.** No label carries a cgroup but
``remediator_cgroup_full_pressure_avg10``, which holds only the cgroups the
daemon says are under action (a value of theirs owned, or a ladder active),
at most ``max_cgroup_series`` of them (default 200, the most pressured kept);
the rest are counted in ``remediator_cgroup_series_dropped_total``.
"""

from __future__ import annotations

import enum
import os
import platform
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from remediator import __version__
from remediator.core.reasons import REASON_FIELD, REASON_KEYS, DeclineReason, decline_reason
from remediator.errors import RemediatorError
from remediator.identity import Identity
from remediator.records import Record, RecordType, Result, presented

DEFAULT_INTERVAL_SEC = 15.0
DEFAULT_MAX_CGROUP_SERIES = 200
# The Debian node_exporter package's textfile directory (--collector.textfile.directory).
DEFAULT_TEXTFILE = Path("/var/lib/prometheus/node-exporter/remediator.prom")

RECLAIM_COMPLETED_FIELD = "RECLAIM_COMPLETED_BYTES"
# Bytes fit in 20 digits; a longer "number" is not one the executor wrote.
_BYTES = re.compile(r"[0-9]{1,20}\Z")
# The textfile is read by node_exporter (the prometheus user on Debian): not private.
_TEXTFILE_MODE = 0o644


class MetricsWriteError(RemediatorError):
    """The textfile could not be written; the previous file (if any) is left as it was."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class WatchMode(str, enum.Enum):
    TRIGGER = "trigger"  # a PSI trigger armed in the kernel
    SAMPLING = "sampling"  # the kernel refused the trigger: pressure is sampled


class PolicyState(str, enum.Enum):
    LOADED = "loaded"
    REJECTED = "rejected"
    DISABLED = "disabled"


_ACTION_RESULTS = frozenset(
    {
        Result.APPLIED,
        Result.WOULD,
        Result.PARTIAL,
        Result.FAILED,
        Result.REFUSED,
        Result.STOOD_BACK,
        Result.GONE,
    }
)
_RESTORE_RESULTS = frozenset({Result.RESTORED, Result.NOT_RESTORED, Result.RECOVERED})
_RESTORE_TYPES = frozenset({RecordType.ROLLED_BACK, RecordType.STATE_RECOVERED, RecordType.BACKED_OFF})


def is_restore(record: Record) -> bool:
    """A record about giving a value back: by its result, or (dry-run's "would", a failure) its type."""
    return bool(record.result) and (record.result in _RESTORE_RESULTS or record.type in _RESTORE_TYPES)


def _label(value: str) -> str:
    # Cgroup names come from os.fsdecode: undecodable bytes are surrogates, which UTF-8 refuses.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class CgroupPressure:
    """A cgroup under action and its full pressure (``memory.pressure`` full avg10, percent)."""

    identity: Identity
    full_avg10: float


Labels = Tuple[str, ...]


class Metrics:
    """The daemon's metrics. Not thread-safe: the daemon's one loop feeds and writes it."""

    def __init__(
        self,
        *,
        dry_run: bool = False,
        interval_sec: float = DEFAULT_INTERVAL_SEC,
        max_cgroup_series: int = DEFAULT_MAX_CGROUP_SERIES,
        version: str = __version__,
        python: Optional[str] = None,
        kernel: Optional[str] = None,
    ) -> None:
        self.dry_run = dry_run
        self.interval_sec = interval_sec
        self.max_cgroup_series = max_cgroup_series
        self._build = {
            "version": version,
            "python": python if python is not None else platform.python_version(),
            "kernel": kernel if kernel is not None else platform.release(),
        }
        self._actions: Dict[Labels, float] = {}
        self._reclaimed: Dict[Labels, float] = {}
        self._declines: Dict[Labels, float] = {}
        self._pressure_events: Dict[Labels, float] = {}
        self._backoffs: Dict[Labels, float] = {}
        self._restores: Dict[Labels, float] = {}
        self._watched: Dict[Labels, float] = {}
        self._owned: Dict[Labels, float] = {}
        self._policies: Dict[PolicyState, float] = dict.fromkeys(PolicyState, 0.0)
        self._last_reload_success: Optional[float] = None
        self._reload_failures = 0.0
        self._cgroups: List[CgroupPressure] = []
        self._cgroup_series_dropped = 0.0
        self._write_failures = 0.0
        self._last_due: Optional[float] = None
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(_Exporter(self))

    # ---------------------------------------------------------------- records

    def observe(self, record: Record) -> None:
        """Count one audit record (see the module docstring for the rules). Never raises.

        The record may be given as the daemon holds it or as presented to a
        reader: labels use the presented form (dry-run's ``would``).
        """
        restore = is_restore(record)
        record = presented(record)
        policy = _label(record.policy)
        action = _label(str(record.action)) if record.action else ""
        if record.type is RecordType.PRESSURE_CONFIRMED:
            _add(self._pressure_events, (policy,))
        if record.type is RecordType.BACKED_OFF and record.result:
            _add(self._backoffs, (policy,))
        if record.result == Result.DECLINED:
            reason = decline_reason(record.extra.get(REASON_FIELD, ""))
            _add(self._declines, (policy, action, reason.value))
            return
        completed = record.extra.get(RECLAIM_COMPLETED_FIELD, "")
        if not record.dry_run and _BYTES.match(completed):
            _add(self._reclaimed, (policy,), float(int(completed)))
        if record.type is RecordType.STATE_UNWRITABLE and record.result != Result.REFUSED:
            return
        if restore:
            _add(self._restores, (policy, _label(record.result)))
            return
        if not action:
            return
        result = Result.STOOD_BACK.value if record.type is RecordType.STOOD_BACK else record.result
        if result in _ACTION_RESULTS:
            dry_run = "1" if record.dry_run else "0"
            _add(self._actions, (policy, action, _label(result), dry_run))

    # ---------------------------------------------------------------- states

    def set_watched_targets(self, counts: Mapping[Tuple[str, WatchMode], int]) -> None:
        """Targets watched now, per (policy, mode); replaces the previous counts."""
        self._watched = {(_label(policy), mode.value): float(n) for (policy, mode), n in counts.items()}

    def set_owned_values(self, counts: Mapping[str, int]) -> None:
        """Values changed and not yet restored, per knob (``memory_high``, ``vfs_cache_pressure``)."""
        self._owned = {(_label(knob),): float(n) for knob, n in counts.items()}

    def set_policies(self, counts: Mapping[PolicyState, int]) -> None:
        """Policy files per state after a load or reload; states not given are 0."""
        self._policies = {state: float(counts.get(state, 0)) for state in PolicyState}

    def reload_succeeded(self, wall_time: float) -> None:
        """The settings and policies in force were loaded at ``wall_time`` (start-up counts)."""
        self._last_reload_success = wall_time

    def reload_failed(self) -> None:
        """A reload was refused as a whole (the running policies stay)."""
        self._reload_failures += 1

    def set_cgroup_pressure(self, entries: Iterable[CgroupPressure]) -> None:
        """The cgroups under action now; replaces the previous set. Beyond ``max_cgroup_series``
        the most pressured are kept and the rest counted as dropped."""
        ranked = sorted(entries, key=lambda e: (-e.full_avg10, e.identity.cgroup))
        kept = ranked[: self.max_cgroup_series]
        self._cgroup_series_dropped += len(ranked) - len(kept)
        self._cgroups = kept

    # ---------------------------------------------------------------- output

    def due(self, now: float) -> bool:
        """Whether a write is due at monotonic ``now``; True claims the slot until ``now + interval_sec``."""
        if self._last_due is not None and now - self._last_due < self.interval_sec:
            return False
        self._last_due = now
        return True

    def next_due_at(self) -> Optional[float]:
        """When the next write is due (monotonic), for the loop's wake-up; None before the first."""
        return None if self._last_due is None else self._last_due + self.interval_sec

    def render(self) -> bytes:
        """The Prometheus text format (version 0.0.4), as node_exporter's textfile collector reads it."""
        return generate_latest(self._registry)

    def write_textfile(self, path: Path) -> None:
        """Replace ``path`` atomically with the current metrics.

        The temporary file is created beside it (never ``*.prom``, which
        node_exporter would read) exclusively and without following links,
        through a descriptor of the directory opened without following a link,
        then fsync'd and renamed over ``path``. Raises MetricsWriteError; the
        old file stays in place then.
        """
        try:
            content = self.render()
        except (UnicodeError, ValueError) as exc:
            self._write_failures += 1
            raise MetricsWriteError(path, f"cannot render the metrics: {exc}") from None
        try:
            _replace_atomically(path, content)
        except OSError as exc:
            self._write_failures += 1
            raise MetricsWriteError(path, exc.strerror or str(exc)) from None

    # the exporter reads these
    def _families(self) -> Iterator[Metric]:
        yield _counter(
            "remediator_actions",
            "Actions taken (or, in dry-run, that would have been), by result.",
            ("policy", "action", "result", "dry_run"),
            self._actions,
        )
        yield _counter(
            "remediator_reclaimed_bytes",
            "Bytes memory.reclaim reported reclaimed (not in dry-run).",
            ("policy",),
            self._reclaimed,
        )
        yield _counter(
            "remediator_declines",
            "Decisions not to act, by reason (one record per target and reason per minute at most).",
            ("policy", "action", "reason"),
            self._declines,
        )
        yield _counter(
            "remediator_pressure_events",
            "Pressure episodes confirmed against the pressure file's total.",
            ("policy",),
            self._pressure_events,
        )
        yield _counter(
            "remediator_backoffs",
            "memory.high values backed off because they throttled the cgroup.",
            ("policy",),
            self._backoffs,
        )
        yield _counter(
            "remediator_restores",
            "Changed values given back (calm, exit, reload, back-off, start-up recovery), by result.",
            ("policy", "result"),
            self._restores,
        )
        yield _gauge(
            "remediator_watched_targets",
            "Targets watched now, by PSI trigger or by sampling.",
            ("policy", "mode"),
            self._watched,
        )
        yield _gauge(
            "remediator_owned_values",
            "Values changed by remediator and not yet restored, by knob.",
            ("knob",),
            self._owned,
        )
        yield _gauge(
            "remediator_policies",
            "Policy files by state after the last load or reload.",
            ("state",),
            {(state.value,): n for state, n in self._policies.items()},
        )
        if self._last_reload_success is not None:
            yield GaugeMetricFamily(
                "remediator_last_reload_success_timestamp_seconds",
                "When the settings and policies in force were loaded (start-up or reload), Unix time.",
                value=self._last_reload_success,
            )
        yield CounterMetricFamily(
            "remediator_reload_failures", "Reloads refused as a whole.", value=self._reload_failures
        )
        build = InfoMetricFamily("remediator_build", "The running remediator, its Python and the kernel.")
        build.add_metric([], {key: _label(value) for key, value in self._build.items()})
        yield build
        yield GaugeMetricFamily(
            "remediator_dry_run", "1 when running in dry-run (nothing written).", value=float(self.dry_run)
        )
        pressure = GaugeMetricFamily(
            "remediator_cgroup_full_pressure_avg10",
            "memory.pressure full avg10 (percent) of the cgroups under action (a value owned or a ladder "
            f"active), at most {self.max_cgroup_series} series.",
            labels=("cgroup", "pod_uid", "namespace", "pod", "container"),
        )
        for entry in self._cgroups:
            ident = entry.identity
            pressure.add_metric(
                [
                    _label(ident.cgroup or "/"),
                    ident.pod_uid or "",
                    ident.pod_namespace or "",
                    ident.pod_name or "",
                    ident.container_name or "",
                ],
                entry.full_avg10,
            )
        yield pressure
        yield CounterMetricFamily(
            "remediator_cgroup_series_dropped",
            "Cgroups under action left out of remediator_cgroup_full_pressure_avg10 by the series cap, "
            "summed over updates.",
            value=self._cgroup_series_dropped,
        )
        yield CounterMetricFamily(
            "remediator_textfile_write_failures",
            "Writes of this file that failed (counted from the next successful one).",
            value=self._write_failures,
        )


class _Exporter(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics._families())


def _add(counts: Dict[Labels, float], labels: Labels, amount: float = 1.0) -> None:
    counts[labels] = counts.get(labels, 0.0) + amount


def _counter(name: str, documentation: str, labels: Labels, counts: Dict[Labels, float]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, value in sorted(counts.items()):
        family.add_metric(list(values), value)
    return family


def _gauge(name: str, documentation: str, labels: Labels, values: Mapping[Labels, float]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


def _replace_atomically(path: Path, content: bytes) -> None:
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        temporary = f".{path.name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, _TEXTFILE_MODE, dir_fd=directory)
        try:
            # The unit's UMask=0077 would leave it unreadable to node_exporter.
            os.fchmod(fd, _TEXTFILE_MODE)
            view = memoryview(content)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError:
            os.close(fd)
            os.unlink(temporary, dir_fd=directory)
            raise
        os.close(fd)
        try:
            os.rename(temporary, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except OSError:
            os.unlink(temporary, dir_fd=directory)
            raise
    finally:
        os.close(directory)


__all__ = [
    "DEFAULT_INTERVAL_SEC",
    "DEFAULT_MAX_CGROUP_SERIES",
    "DEFAULT_TEXTFILE",
    "REASON_FIELD",
    "REASON_KEYS",
    "CgroupPressure",
    "DeclineReason",
    "Metrics",
    "MetricsWriteError",
    "PolicyState",
    "WatchMode",
    "decline_reason",
    "is_restore",
]
