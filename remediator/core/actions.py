"""What the decision core asks the executor to do.

Actions are requests, not facts: the executor (the only writer) re-reads
before writing, records originals before the first write, honours dry-run,
and reports the outcome as a record. ``cause`` is the record the executor
completes (with result, before/after, errno) so that enforcing and dry-run
produce the same record, differing only in REMEDIATOR_DRY_RUN and "would".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from remediator.knobs.base import Action
from remediator.records import Record


@dataclass(frozen=True)
class SetMemoryHigh(Action):
    """Write memory.high (None = "max").

    ``expected`` is the value the core believes is there now (None = "max");
    the executor re-reads and stands back if it differs, because then another
    writer (systemd, kubelet) owns the value.
    """

    cgroup: str
    value: Optional[int]
    expected: Optional[int]
    cause: Record


@dataclass(frozen=True)
class RestoreMemoryHigh(Action):
    """Put back the original memory.high recorded before our first write,
    unless someone else changed it since our last write (``ours``)."""

    cgroup: str
    ours: Optional[int]
    cause: Record


@dataclass(frozen=True)
class ReleaseOwnership(Action):
    """Forget the recorded original of ``file`` WITHOUT writing anything.

    Used when another writer (systemd, kubelet, an operator) changed a value
    we had changed: the value is theirs now, so restoring our recorded
    original later would fight them. ``cgroup`` is None for node-wide sysctls,
    and then ``file`` is the sysctl's name as in ``SetSysctl.name``
    (``"vfs_cache_pressure"``); for cgroups it is the interface file
    (``"memory.high"``).
    """

    cgroup: Optional[str]
    file: str
    cause: Record
