"""The core's shared wording: how targets, shares and a cgroup's memory are named in records, and the
one builder of a record about a policy's target. Used by the ladder, the turns and every knob's plan."""

from __future__ import annotations

from typing import Mapping, Optional

from remediator.core.state import TargetKey
from remediator.diagnosis.composition import MemoryComposition
from remediator.policy.compiled import Policy
from remediator.records import Knob, Record, RecordType
from remediator.sizes import format_bytes


def target_record(
    policy: Policy,
    key: TargetKey,
    evidence: Mapping[str, str],
    record_type: RecordType,
    message: str,
    action: Optional[Knob] = None,
    rung: Optional[int] = None,
    result: str = "",
    extra: Optional[Mapping[str, str]] = None,
) -> Record:
    """A record about one target of a policy, on the evidence of its observation (the core's one builder)."""
    fields = dict(extra or {})
    if rung is not None:
        fields["RUNG"] = str(rung)
    return Record(
        type=record_type,
        message=message,
        policy=policy.name,
        cgroup=key.cgroup,
        action=action,
        result=result,
        evidence=evidence,
        extra=fields,
    )


def describe_target(cgroup: Optional[str]) -> str:
    """How a target is named in messages."""
    if cgroup is None:
        return "the node"
    if cgroup == "":
        return "the root cgroup"
    return cgroup


def format_share(fraction: float) -> str:
    """A stall share or a ratio as a percentage with one decimal (stall shares are often small)."""
    return f"{fraction * 100:.1f} %"


def describe_composition(comp: MemoryComposition) -> str:
    """What a cgroup's memory is made of, in the terms that decide what reclaim can take."""
    anon = f"anon {format_bytes(comp.anon_bytes)}" + ("" if comp.swap_usable else " (no swap)")
    return (
        f"{anon}, shmem/tmpfs {format_bytes(comp.shmem_bytes)}, "
        f"dirty/writeback {format_bytes(comp.dirty_bytes)}, kernel {format_bytes(comp.kernel_bytes)}, "
        f"clean page cache {format_bytes(comp.reclaimable_cache_bytes)}"
    )
