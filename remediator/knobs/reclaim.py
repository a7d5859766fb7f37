"""memory.reclaim: ask the kernel to reclaim some of a cgroup's clean page cache (Linux 5.19+).

A one-shot request: nothing to own or restore. memory.reclaim can only take clean, non-shmem page
cache (without swap); shmem/tmpfs, anon and kernel memory stay, dirty pages need I/O first, so the
amount is a fraction of the clean-cache estimate and the plan declines when there is too little.
"""

from __future__ import annotations

import errno as errno_mod
from dataclasses import dataclass, replace
from typing import Optional, cast

from remediator.core.state import NodeState, TargetState
from remediator.core.wording import describe_composition, format_share
from remediator.diagnosis.composition import PAGE_SIZE, MemoryComposition, page_align_down
from remediator.errors import KernelTransient, RemediatorError
from remediator.knobs.base import (
    WRITTEN,
    Action,
    Holding,
    KnobFile,
    KnobPlugin,
    KnobWriter,
    OutcomeT_co,
    RungContext,
    RungDecline,
    RungOutcome,
    RungTake,
)
from remediator.policy.compiled import ReclaimAction
from remediator.readings import CgroupSnapshot
from remediator.records import Knob, Record, RecordType
from remediator.sizes import format_bytes

# Extra record field (REMEDIATOR_FOLLOW_UP=1) on a reclaim taken as a follow-up, not for a pressure.
FOLLOW_UP_FIELD = "FOLLOW_UP"

# memory.reclaim is synchronous in the writer: asking for a few GiB at once can
# block for seconds. Chunks keep each write short so the time budget is checked
# often and the loop (and its watchdog) is never held for long.
RECLAIM_CHUNK_BYTES = 64 * 1024 * 1024

MEMORY_RECLAIM = "memory.reclaim"
MEMORY_CURRENT = "memory.current"


@dataclass(frozen=True)
class Reclaim(Action):
    """Write ``<bytes>`` to the cgroup's memory.reclaim within ``timeout_sec``."""

    cgroup: str
    bytes: int
    timeout_sec: float
    cause: Record


def reclaim_amount(composition: MemoryComposition, spec: ReclaimAction) -> int:
    """Bytes to ask memory.reclaim for: a fraction of the clean-cache estimate, capped, page-aligned down.

    Never more than the estimate (shmem, dirty and writeback pages are not in it).
    May be 0: callers decline below one page.
    """
    wanted = int(composition.reclaimable_cache_bytes * spec.fraction)
    if spec.max_bytes is not None:
        wanted = min(wanted, spec.max_bytes)
    return page_align_down(max(0, wanted))


class ReclaimKnob(KnobPlugin):
    knob = Knob.RECLAIM
    cgroup_writes = frozenset({MEMORY_RECLAIM})

    def handles(self, action: Action) -> bool:
        return isinstance(action, Reclaim)

    def subject(self, action: Action) -> Optional[str]:
        return cast(Reclaim, action).cgroup

    def plan(self, spec: object, index: int, ctx: RungContext) -> RungOutcome:
        reclaim = cast(ReclaimAction, spec)
        snapshot = ctx.snapshot
        comp = ctx.composition
        if not isinstance(snapshot, CgroupSnapshot) or comp is None:
            return RungDecline(
                "needs_cgroup", "reclaim writes a cgroup's memory.reclaim; a node target has none"
            )
        if not ctx.reclaim_supported:
            return RungDecline("no_memory_reclaim", "kernel has no memory.reclaim (needs 5.19 or later)")
        reclaimable = comp.reclaimable_cache_bytes
        amount = reclaim_amount(comp, reclaim)
        if reclaimable < reclaim.min_bytes or amount < PAGE_SIZE:
            return RungDecline(
                "too_little_cache",
                f"only {format_bytes(reclaimable)} of clean page cache in {ctx.where} "
                f"(min_bytes {format_bytes(reclaim.min_bytes)}); its {format_bytes(comp.usage_bytes)} is "
                f"{describe_composition(comp)}: reclaim cannot take anon without swap, shmem/tmpfs, "
                "dirty pages or kernel memory",
            )
        capped = reclaim.max_bytes is not None and amount >= page_align_down(reclaim.max_bytes)
        cap = ", capped by max_bytes" if capped else ""
        message = (
            f"reclaim {format_bytes(amount)} of clean page cache from {ctx.where}: "
            f"{format_share(reclaim.fraction)} of {format_bytes(reclaimable)} reclaimable{cap}; "
            f"{ctx.stall_text}"
        )
        cause = ctx.record(RecordType.ACTION_APPLIED, message, reclaim.kind, index)
        return RungTake(
            Reclaim(cgroup=snapshot.cgroup, bytes=amount, timeout_sec=reclaim.timeout_sec, cause=cause)
        )

    def note(self, target: TargetState, node: NodeState, action: Action, result: str, now: float) -> Holding:
        """Nothing to own. A follow-up that reclaimed nothing (dry-run's "would", refused, failed)
        changes nothing the next look could see: asking again every every_sec would only repeat the
        record, so the follow-up ends."""
        assert isinstance(action, Reclaim)
        if action.cause.extra.get(FOLLOW_UP_FIELD) != "1" or result in WRITTEN:
            return Holding(target, node)
        return Holding(replace(target, follow_up_since=None), node)

    def execute(self, action: Action, writer: KnobWriter[OutcomeT_co]) -> OutcomeT_co:
        assert isinstance(action, Reclaim)
        if action.bytes <= 0:
            return writer.finish("declined", detail="nothing to reclaim (0 bytes asked)")
        reclaim_file = KnobFile(action.cgroup, MEMORY_RECLAIM)
        current_file = KnobFile(action.cgroup, MEMORY_CURRENT)
        if not writer.exists(reclaim_file):
            # Kernels before 5.19 have no memory.reclaim (and say so without failing).
            return writer.finish("declined", detail="this kernel has no memory.reclaim (5.19+)")
        before = writer.read_uint(current_file)
        start = writer.monotonic()
        deadline = start + action.timeout_sec
        remaining = action.bytes
        requested = completed = 0
        partial_detail = ""
        while remaining > 0:
            chunk = min(remaining, RECLAIM_CHUNK_BYTES)
            try:
                writer.write(
                    reclaim_file,
                    str(chunk),
                    retry_eagain=False,
                    budget_sec=max(0.0, min(writer.retry_budget_sec, deadline - writer.monotonic())),
                )
            except KernelTransient as exc:
                if exc.errno != errno_mod.EAGAIN:
                    raise
                # EAGAIN: the kernel reclaimed less than this chunk. Asking again
                # at once would only burn CPU in reclaim.
                requested += chunk
                partial_detail = (
                    f"partial: the kernel could not reclaim all of a {format_bytes(chunk)} request (EAGAIN)"
                )
                break
            requested += chunk
            completed += chunk
            remaining -= chunk
            if remaining > 0 and writer.monotonic() >= deadline:
                partial_detail = (
                    f"partial: time budget of {action.timeout_sec:g} s used up after "
                    f"{format_bytes(completed)} of {format_bytes(action.bytes)}"
                )
                break
        after = _read_after(writer, current_file)
        extra = {
            "RECLAIM_ASKED_BYTES": str(action.bytes),
            "RECLAIM_REQUESTED_BYTES": str(requested),
            "RECLAIM_COMPLETED_BYTES": str(completed),
        }
        result = "partial" if partial_detail else "applied"
        return writer.finish(result, before=str(before), after=after, detail=partial_detail, extra=extra)


def _read_after(writer: KnobWriter[object], current_file: KnobFile) -> str:
    try:
        return str(writer.read_uint(current_file))
    except RemediatorError:
        # The reclaim happened; not knowing its effect is no reason to call it failed.
        return ""
