"""What the kernel told us, as plain immutable values.

These types are the common language of the readers (which produce them), the
diagnosis and ``status`` (which explain them) and the decision core (which
decides on them). They hold no paths and do no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional


@dataclass(frozen=True)
class PressureLine:
    """One ``some`` or ``full`` line of a PSI file. avgs are percent; total is cumulative µs."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True)
class Pressure:
    some: PressureLine
    # Absent on kernels/files that have no ``full`` line (e.g. old kernels' cpu).
    full: Optional[PressureLine]

    def line(self, kind: str) -> Optional[PressureLine]:
        if kind == "some":
            return self.some
        if kind == "full":
            return self.full
        raise ValueError(f"unknown pressure kind {kind!r}")


@dataclass(frozen=True)
class MemoryStat:
    """``memory.stat`` by key, bytes (or counts for event keys). Unknown keys are kept."""

    values: Mapping[str, int]

    def get(self, key: str, default: int = 0) -> int:
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.values


@dataclass(frozen=True)
class MemoryEvents:
    """``memory.events`` (hierarchical) or ``memory.events.local`` counters."""

    low: int = 0
    high: int = 0
    max: int = 0
    oom: int = 0
    oom_kill: int = 0
    oom_group_kill: int = 0
    # Keys this program does not know yet, kept verbatim.
    other: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CgroupSnapshot:
    """One consistent-enough read of a cgroup's memory interface files."""

    cgroup: str
    current_bytes: int
    # None means "max": unlimited / unset.
    max_bytes: Optional[int]
    high_bytes: Optional[int]
    min_bytes: int
    low_bytes: int
    # None when the cgroup has no memory.swap.max (no swap controller) or it is "max".
    swap_max_bytes: Optional[int]
    stat: MemoryStat
    events: MemoryEvents
    pressure: Pressure
    # memory.events.local: this cgroup's own counters (memory.events counts the
    # whole subtree). None on kernels without the file.
    events_local: Optional[MemoryEvents] = None

    @property
    def own_high_events(self) -> int:
        """Times *this* cgroup's memory.high throttled it; a child breaching its
        own memory.high shows in the hierarchical counter but not here."""
        return self.events_local.high if self.events_local is not None else self.events.high


@dataclass(frozen=True)
class NodeSnapshot:
    """Node-wide readings from the proc root."""

    pressure: Pressure
    mem_total_bytes: int
    mem_available_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int
    slab_reclaimable_bytes: int
    # None when the sysctl file is missing or unreadable.
    vfs_cache_pressure: Optional[int]
