"""The actions of the node-wide vm sysctls (``vfs_cache_pressure``, ``drop_caches``): one shape for
both, told apart by ``name`` (the sysctl's name, which is also its knob)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from remediator.knobs.base import Action
from remediator.records import Record


@dataclass(frozen=True)
class SetSysctl(Action):
    """Write a node-wide vm sysctl (``vfs_cache_pressure`` or ``drop_caches``)."""

    name: str
    value: int
    expected: Optional[int]  # re-read check; None for drop_caches (write-only trigger)
    cause: Record


@dataclass(frozen=True)
class RestoreSysctl(Action):
    """Put back the original value of a vm sysctl we changed, unless someone else changed it since."""

    name: str
    ours: int
    cause: Record
