"""A one-line diagnosis in plain words, from one snapshot.

This is the sentence the seed's engineer needed on day one: where the memory
really is, how pressured the cgroup is, and why the kernel is about to kill
it. Pure: readings in, text out.
"""

from __future__ import annotations

from typing import List, Optional

from remediator.diagnosis.composition import MemoryComposition, compose
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.sizes import format_bytes

AT_LIMIT_FRACTION = 0.98
NEAR_LIMIT_FRACTION = 0.90
MOSTLY_CACHE_FRACTION = 0.10  # below this share of usage, page cache is not worth a clause


def _limit_clause(snapshot: CgroupSnapshot) -> str:
    if snapshot.max_bytes is None:
        return f"no memory.max (using {format_bytes(snapshot.current_bytes)})"
    share = snapshot.current_bytes / snapshot.max_bytes if snapshot.max_bytes else 1.0
    if share >= AT_LIMIT_FRACTION:
        return "at its limit"
    if share >= NEAR_LIMIT_FRACTION:
        return f"near its limit ({share * 100:.0f} % of memory.max)"
    return f"at {share * 100:.0f} % of memory.max"


def _cache_clause(comp: MemoryComposition) -> Optional[str]:
    if comp.usage_bytes <= 0:
        return None
    file_share = comp.fraction_of_usage(comp.file_bytes)
    if file_share < MOSTLY_CACHE_FRACTION:
        return f"{comp.fraction_of_usage(comp.anon_bytes) * 100:.0f} % of usage is anonymous memory"
    head = f"{file_share * 100:.0f} % of usage is page cache"
    if comp.file_bytes <= 0:
        return head
    reclaimable_share = comp.reclaimable_cache_bytes / comp.file_bytes
    if reclaimable_share >= 0.5:
        return f"{head}, most of it reclaimable"
    if comp.shmem_bytes >= comp.dirty_bytes and comp.shmem_bytes > 0:
        return f"{head}, but {comp.shmem_bytes / comp.file_bytes * 100:.0f} % of that is shmem/tmpfs, " + (
            "which reclaim can only swap out"
            if comp.swap_usable
            else "which reclaim cannot take without swap"
        )
    if comp.dirty_bytes > 0:
        return f"{head}, much of it dirty or under writeback (needs I/O before it can be reclaimed)"
    return f"{head}, little of it reclaimable"


def _high_clause(snapshot: CgroupSnapshot) -> Optional[str]:
    if snapshot.max_bytes is None:
        return None
    if snapshot.high_bytes is None:
        return "memory.high is unset, so the kernel goes straight from the limit to the OOM killer"
    share = snapshot.high_bytes / snapshot.max_bytes if snapshot.max_bytes else 0.0
    return f"memory.high is {format_bytes(snapshot.high_bytes)} ({share * 100:.0f} % of memory.max)"


def _pressure_clause(snapshot: CgroupSnapshot) -> str:
    full = snapshot.pressure.full
    if full is not None:
        return f"full pressure {full.avg10:.1f} % in the last 10 s"
    return f"some pressure {snapshot.pressure.some.avg10:.1f} % in the last 10 s"


def _events_clause(snapshot: CgroupSnapshot) -> Optional[str]:
    parts: List[str] = []
    ev = snapshot.events
    if ev.oom_kill:
        parts.append(f"{ev.oom_kill} OOM kill{'s' if ev.oom_kill != 1 else ''}")
    if ev.max:
        parts.append(f"memory.max hit {ev.max} time{'s' if ev.max != 1 else ''}")
    if ev.high:
        parts.append(f"throttled at memory.high {ev.high} time{'s' if ev.high != 1 else ''}")
    return ", ".join(parts) if parts else None


def diagnose(snapshot: CgroupSnapshot, node: Optional[NodeSnapshot] = None) -> str:
    comp = compose(snapshot, node)
    clauses = [
        _limit_clause(snapshot),
        _cache_clause(comp),
        _high_clause(snapshot),
        _pressure_clause(snapshot),
        _events_clause(snapshot),
    ]
    return "; ".join(c for c in clauses if c)
