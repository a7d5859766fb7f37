"""The trace format ``remediator.trace/v1``: its values, and how snapshots become records.

A trace is one JSON object per line (docs/trace-format.md describes every
record and field). The first line is the header; then, in time order,
``cgroup`` and ``node`` observations, ``gone`` when a cgroup disappeared,
``trigger`` when a PSI trigger fired, and ``end`` when the recorder stopped
cleanly.

Observations are delta-encoded. A record's *full form* holds every field of
the snapshot (``cgroup_fields``/``node_fields``); the first record of a cgroup
(and the first after its ``gone``) and the first node record carry the full
form, every later one only what changed since the previous record of the same
cgroup or of the node (``delta_fields``):

- a field that is absent is unchanged;
- a field that is present replaces the previous value (``null`` included:
  ``"high": null`` means memory.high became ``max``);
- the maps ``stat``, ``events``, ``events_local`` and ``meminfo`` change key
  by key: a key that is present replaces that key's value, ``null`` removes
  the key, an absent key is unchanged. ``events_local: null`` as a whole
  means the file is absent; a map after a ``null`` starts from an empty map.

The reader (``remediator.trace.reader``) applies the same rules in the same
order, so it reconstructs exactly the snapshots that were written (with
``memory.stat`` reduced to ``STAT_KEYS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from remediator.errors import RemediatorError
from remediator.kernel.meminfo import REQUIRED_KEYS
from remediator.readings import CgroupSnapshot, MemoryEvents, NodeSnapshot, Pressure, PressureLine

SCHEMA = "remediator.trace/v1"
SCHEMA_PREFIX = "remediator.trace/"

# The memory.stat keys a trace keeps: what the composition, the diagnosis and the
# records read (remediator/diagnosis/composition.py, core/records.py evidence_from),
# plus the reclaim-activity counters an incident is read from afterwards (refaults =
# thrashing; pgscan/pgsteal = reclaim effort and success; pgmajfault). The rest of
# memory.stat (~50 keys on 6.1, many of them counters that move every second) would
# roughly double a busy cgroup's records for nothing the core looks at.
STAT_KEYS: Tuple[str, ...] = (
    "anon",
    "file",
    "kernel",
    "kernel_stack",
    "pagetables",
    "percpu",
    "sock",
    "vmalloc",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "swapcached",
    "active_anon",
    "inactive_anon",
    "active_file",
    "inactive_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "slab",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_file",
    "pgscan",
    "pgsteal",
    "pgmajfault",
)

# /proc/meminfo keys of a node record: exactly those NodeSnapshot is built from.
MEMINFO_KEYS: Tuple[str, ...] = REQUIRED_KEYS

# Times are written as seconds since the header's start_monotonic, to the microsecond:
# finer than any clock the daemon decides on, and 6 digits after the point at most.
TIME_DECIMALS = 6

# The known counters of memory.events, always present in a record's events maps.
EVENT_KEYS: Tuple[str, ...] = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")

# Fields of a record's full form, in the order they are written.
CGROUP_SCALARS: Tuple[str, ...] = ("current", "max", "high", "min", "low", "swap_max")
CGROUP_MAPS: Tuple[str, ...] = ("stat", "events", "events_local")
NODE_MAPS: Tuple[str, ...] = ("meminfo",)
MAP_FIELDS = frozenset(CGROUP_MAPS + NODE_MAPS)
# Map fields whose value may be null as a whole (the file is absent).
NULLABLE_MAPS = frozenset({"events_local"})

JsonObject = Dict[str, Any]


class TraceRecordType(str, Enum):
    HEADER = "header"
    CGROUP = "cgroup"
    NODE = "node"
    GONE = "gone"
    TRIGGER = "trigger"
    END = "end"


class TraceSource(str, Enum):
    """Who wrote the trace."""

    RECORD = "record"  # `remediator record`: every target sampled every interval_sec
    FLIGHT_RECORDER = "flight-recorder"  # the daemon: what it read, when it read it


class EndReason(str, Enum):
    DURATION = "duration"  # --duration elapsed
    SIGNAL = "signal"  # SIGINT/SIGTERM (detail names it)
    WINDOW = "window"  # a flight recorder's window, written at an incident


class NodeWatchMode(str, Enum):
    """How the daemon would have been woken on the recorded node (Capabilities.watch_mode)."""

    TRIGGERS = "triggers"
    SAMPLING = "sampling"
    NONE = "none"


class TraceError(RemediatorError):
    """A trace that cannot be read as ``remediator.trace/v1``, located: file, line and field."""

    def __init__(self, path: str, line: int, field: Optional[str], message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.path = path
        self.line = line
        self.field = field
        self.message = message


@dataclass(frozen=True)
class TraceCapabilities:
    """What the recording node could do, as far as replay needs to know."""

    memory_reclaim: bool
    watch_mode: NodeWatchMode
    # Whether a 2 s / a 1 s PSI trigger window was accepted (None: not probed).
    triggers_accepted: Optional[bool]
    short_window_triggers: Optional[bool]
    summary: Tuple[str, ...]


@dataclass(frozen=True)
class PolicyDigest:
    """A policy file as it was when the trace was recorded: name in its directory, sha256 of its bytes."""

    file: str
    sha256: str


@dataclass(frozen=True)
class TargetTrigger:
    """One policy's PSI trigger on one target at the start of a recording (``cgroup`` None: the node)."""

    policy: str
    cgroup: Optional[str]
    trigger: str  # in the kernel's terms: "full 100000 2000000"
    armed: bool
    reason: str = ""  # why it was not armed


@dataclass(frozen=True)
class TraceTriggers:
    """The header's ``triggers``: the policies' PSI triggers ``remediator record`` armed, so that
    a replay takes the events of an armed target from the trace alone (docs/trace-format.md)."""

    targets: Tuple[TargetTrigger, ...]  # every target at the start, armed or not
    # The recorder armed the triggers of the targets it found after the start too.
    armed_later: bool

    def events_recorded(self, cgroup: Optional[str]) -> bool:
        """Whether the trace holds every event of the triggers on ``cgroup`` (None: the node): a
        target armed at the start, or found later while the recorder armed what it found."""
        listed = [t for t in self.targets if t.cgroup == cgroup]
        if listed:
            return any(t.armed for t in listed)
        return self.armed_later


@dataclass(frozen=True)
class TraceHeader:
    node: str
    kernel_release: str
    capabilities: TraceCapabilities
    policies: Tuple[PolicyDigest, ...]
    start_wall: float  # seconds since the epoch
    start_monotonic: float  # the recorder's monotonic clock at start_wall; record times count from here
    source: TraceSource
    # The sampling interval of `remediator record`; None for a flight recorder's window.
    interval_sec: Optional[float]
    remediator_version: str
    stat_keys: Tuple[str, ...] = STAT_KEYS
    schema: str = SCHEMA
    # What `remediator record` armed; None: no trigger was armed (older traces, --no-triggers,
    # the flight recorder's, whose trigger records are the daemon's own events).
    triggers: Optional[TraceTriggers] = None

    def monotonic_at(self, t: float) -> float:
        """The recorder's monotonic clock at record time ``t``."""
        return self.start_monotonic + t


# What a reader yields, one per record after the header, in file order. ``t`` is
# seconds since the header's start_monotonic; ``line`` is the record's line number.


@dataclass(frozen=True)
class CgroupSample:
    """A cgroup's memory files as read at ``t``; ``node`` is the latest node sample at or before it."""

    t: float
    snapshot: CgroupSnapshot
    node: Optional[NodeSnapshot]
    line: int


@dataclass(frozen=True)
class NodeSample:
    t: float
    snapshot: NodeSnapshot
    line: int


@dataclass(frozen=True)
class CgroupRemoved:
    """The cgroup was gone at ``t``; a later sample of the same name is a new cgroup."""

    t: float
    cgroup: str
    line: int


@dataclass(frozen=True)
class TriggerFired:
    """A PSI trigger armed on the cgroup's memory.pressure (``cgroup`` None: the node's) fired at ``t``."""

    t: float
    cgroup: Optional[str]
    policy: Optional[str]
    line: int


@dataclass(frozen=True)
class TraceEnd:
    """The recorder stopped cleanly at ``t``."""

    t: float
    reason: EndReason
    detail: str
    line: int


TraceItem = Union[CgroupSample, NodeSample, CgroupRemoved, TriggerFired, TraceEnd]


class TruncationReason(str, Enum):
    GZIP_CUT = "the gzip stream ends before its end marker (the writer did not close it)"
    INCOMPLETE_LINE = "the last line has no end (the writer was interrupted while writing it)"


@dataclass(frozen=True)
class TraceTruncation:
    """Where a trace cut by a crash stops: ``line`` is the first line that could not be read."""

    line: int
    reason: TruncationReason


# ----- encoding: snapshots to a record's full form, and the delta between two full forms


def record_time(t: float) -> float:
    return round(t, TIME_DECIMALS)


def pressure_line_json(line: PressureLine) -> List[Union[float, int]]:
    return [float(line.avg10), float(line.avg60), float(line.avg300), line.total_us]


def _pressure_fields(pressure: Pressure) -> JsonObject:
    return {
        "some": pressure_line_json(pressure.some),
        "full": None if pressure.full is None else pressure_line_json(pressure.full),
    }


def events_json(events: MemoryEvents) -> Dict[str, int]:
    out = {
        "low": events.low,
        "high": events.high,
        "max": events.max,
        "oom": events.oom,
        "oom_kill": events.oom_kill,
        "oom_group_kill": events.oom_group_kill,
    }
    out.update(events.other)
    return out


def cgroup_fields(snapshot: CgroupSnapshot, stat_keys: Tuple[str, ...] = STAT_KEYS) -> JsonObject:
    """A cgroup snapshot's full form: every field a ``cgroup`` record can hold but its name and time."""
    fields: JsonObject = {
        "current": snapshot.current_bytes,
        "max": snapshot.max_bytes,
        "high": snapshot.high_bytes,
        "min": snapshot.min_bytes,
        "low": snapshot.low_bytes,
        "swap_max": snapshot.swap_max_bytes,
    }
    fields.update(_pressure_fields(snapshot.pressure))
    fields["stat"] = {key: snapshot.stat.values[key] for key in stat_keys if key in snapshot.stat.values}
    fields["events"] = events_json(snapshot.events)
    fields["events_local"] = None if snapshot.events_local is None else events_json(snapshot.events_local)
    return fields


def node_fields(snapshot: NodeSnapshot) -> JsonObject:
    """A node snapshot's full form."""
    fields = _pressure_fields(snapshot.pressure)
    fields["meminfo"] = {
        "MemTotal": snapshot.mem_total_bytes,
        "MemAvailable": snapshot.mem_available_bytes,
        "SwapTotal": snapshot.swap_total_bytes,
        "SwapFree": snapshot.swap_free_bytes,
        "SReclaimable": snapshot.slab_reclaimable_bytes,
    }
    fields["vfs_cache_pressure"] = snapshot.vfs_cache_pressure
    return fields


def _map_delta(previous: Mapping[str, Any], current: Mapping[str, Any]) -> JsonObject:
    delta: JsonObject = {key: value for key, value in current.items() if previous.get(key, None) != value}
    delta.update({key: None for key in previous if key not in current})
    return delta


def delta_fields(previous: Optional[Mapping[str, Any]], current: Mapping[str, Any]) -> JsonObject:
    """What a record must hold so that a reader that has ``previous`` reconstructs ``current``.

    ``previous`` None (no earlier record, or the cgroup was gone): the full form.
    """
    if previous is None:
        return dict(current)
    delta: JsonObject = {}
    for key, value in current.items():
        before = previous.get(key)
        if key in MAP_FIELDS and isinstance(value, dict):
            changed = _map_delta(before if isinstance(before, dict) else {}, value)
            if changed or not isinstance(before, dict):
                delta[key] = changed if isinstance(before, dict) else dict(value)
        elif key not in previous or before != value:
            delta[key] = value
    return delta
