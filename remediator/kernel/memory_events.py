"""A cgroup's ``memory.events`` (hierarchical) and ``memory.events.local`` (the cgroup alone).

Both are flat keyed counters since the cgroup was created: ``low``, ``high``,
``max``, ``oom``, ``oom_kill``, ``oom_group_kill`` and, on newer kernels,
more (``sock_throttled``...), which are kept in ``MemoryEvents.other``.
"""

from __future__ import annotations

from typing import Mapping

from remediator.kernel.file_io import read_text
from remediator.kernel.memory_stat import parse_flat_keyed
from remediator.kernel.roots import KernelRoots
from remediator.readings import MemoryEvents

EVENTS_FILE = "memory.events"
EVENTS_LOCAL_FILE = "memory.events.local"

KNOWN_EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")


def parse_memory_events(text: str, source: str = "") -> MemoryEvents:
    """Parse ``memory.events[.local]``. Raises only ``KernelParseError``.

    A known counter that is absent reads as 0 (``oom_group_kill`` is 5.17+).
    """
    return memory_events_from(parse_flat_keyed(text, source))


def memory_events_from(counters: Mapping[str, int]) -> MemoryEvents:
    """The counters as ``MemoryEvents``: the known ones by name (absent: 0), the rest in ``other``."""
    known = {key: counters.get(key, 0) for key in KNOWN_EVENTS}
    return MemoryEvents(
        low=known["low"],
        high=known["high"],
        max=known["max"],
        oom=known["oom"],
        oom_kill=known["oom_kill"],
        oom_group_kill=known["oom_group_kill"],
        other={key: value for key, value in counters.items() if key not in known},
    )


def read_memory_events(roots: KernelRoots, cgroup: str, local: bool = False) -> MemoryEvents:
    """``memory.events``, or ``memory.events.local`` when ``local`` is true."""
    path = roots.cgroup_file(cgroup, EVENTS_LOCAL_FILE if local else EVENTS_FILE)
    return parse_memory_events(read_text(path, roots.cgroup_dir(cgroup)), str(path))
