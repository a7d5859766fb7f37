"""vm.vfs_cache_pressure: a node-wide sysctl that makes the kernel reclaim dentry and inode caches
sooner. Ours once written (one owner target at a time), given back at calm, back-off or exit.

The core remembers who owns the value (``NodeState.vfs_owner``) and what it wrote; the executor's
state store keeps the original (kind ``sysctl``, name ``vfs_cache_pressure``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Collection, Mapping, Optional, Tuple, cast

from remediator.core.state import (
    ChangedValue,
    NodeState,
    ProposedSysctl,
    ProposedWrite,
    TargetKey,
    TargetState,
)
from remediator.core.wording import describe_target
from remediator.knobs.base import (
    RESTORE_RETRY,
    SIMULATED,
    WRITTEN,
    Action,
    Holding,
    KnobFile,
    KnobPlugin,
    KnobWriter,
    Look,
    OutcomeT_co,
    OwnedKnob,
    ReleaseOwnership,
    RungContext,
    RungDecline,
    RungOutcome,
    RungTake,
    plain_value,
)
from remediator.knobs.sysctl import RestoreSysctl, SetSysctl
from remediator.policy.compiled import VfsCachePressureAction
from remediator.records import Knob, Record, RecordType, evidence_from
from remediator.sizes import format_bytes

VFS_CACHE_PRESSURE = Knob.VFS_CACHE_PRESSURE
FILE = KnobFile.vm_sysctl(VFS_CACHE_PRESSURE.value)

OWNED = OwnedKnob(
    knob=VFS_CACHE_PRESSURE,
    kind="sysctl",
    per_cgroup=False,
    target=lambda _name: FILE,
    limit=False,
    format=plain_value,
    describe=lambda name: f"vm.{name}",
    refuse_zero=True,
    snapshot_field="vfs_cache_pressure",
)


class VfsCachePressure(KnobPlugin):
    knob = VFS_CACHE_PRESSURE
    owned: Optional[OwnedKnob] = OWNED
    node_writes = frozenset({FILE.file})

    def handles(self, action: Action) -> bool:
        return isinstance(action, (SetSysctl, RestoreSysctl)) and action.name == self.knob

    def plan(self, spec: object, index: int, ctx: RungContext) -> RungOutcome:
        vfs = cast(VfsCachePressureAction, spec)
        node = ctx.node
        if node is None or node.vfs_cache_pressure is None:
            return RungDecline("vfs_unreadable", "vm.vfs_cache_pressure could not be read")
        if ctx.vfs_owned_elsewhere is not None:
            other = ctx.vfs_owned_elsewhere
            return RungDecline(
                "vfs_owned_elsewhere",
                f"vm.vfs_cache_pressure is being managed by policy {other.policy} for "
                f"{describe_target(other.cgroup)}; one owner at a time",
            )
        # What we set when we own it, else what the node shows.
        current = ctx.owned_vfs.ours if ctx.owned_vfs is not None else node.vfs_cache_pressure
        if current >= vfs.value:
            return RungDecline(
                "vfs_already_high",
                f"vm.vfs_cache_pressure is already {current} (>= {vfs.value})",
            )
        message = (
            f"set vm.vfs_cache_pressure to {vfs.value} (from {current}) so the kernel reclaims dentry and "
            f"inode caches ({format_bytes(node.slab_reclaimable_bytes)} reclaimable slab on the node); "
            f"{ctx.stall_text}"
        )
        cause = ctx.record(RecordType.ACTION_APPLIED, message, vfs.kind, index)
        return RungTake(
            SetSysctl(name=self.knob, value=vfs.value, expected=node.vfs_cache_pressure, cause=cause)
        )

    def note(self, target: TargetState, node: NodeState, action: Action, result: str, now: float) -> Holding:
        """A write (applied, partial, or dry-run's would) makes the proposing target own the value;
        a restore gives it back, except a failed one (asked again at the next calm look)."""
        if isinstance(action, SetSysctl):
            return Holding(target, _note_write(node, action, result, now))
        vfs = node.vfs_cache_pressure
        if vfs is None:
            return Holding(target, node)
        if result == RESTORE_RETRY:
            return Holding(target, replace(node, vfs_cache_pressure=replace(vfs, restore_requested=False)))
        return Holding(target, replace(node, vfs_owner=None, vfs_cache_pressure=None))

    def holds(self, look: Look, target: TargetState, node: NodeState) -> bool:
        vfs = node.vfs_cache_pressure
        return _owned_by(look, node) and vfs is not None and not vfs.restore_requested

    def propose(
        self, look: Look, target: TargetState, node: NodeState, action: Action, rate: float
    ) -> Holding:
        if not isinstance(action, SetSysctl) or action.expected is None:
            return Holding(target, node)
        owned = node.vfs_cache_pressure if _owned_by(look, node) else None
        before = owned.before if owned is not None and owned.before is not None else action.expected
        proposal = ProposedSysctl(owner=look.key, write=ProposedWrite(action.value, rate, 0), before=before)
        return Holding(target, replace(node, proposed_vfs=proposal))

    def release_if_changed(self, look: Look, target: TargetState, node: NodeState) -> Holding:
        vfs = node.vfs_cache_pressure
        readings = look.node
        if (
            not _owned_by(look, node)
            or vfs is None
            or vfs.restore_requested
            or readings is None
            or readings.vfs_cache_pressure is None
            or readings.vfs_cache_pressure == vfs.ours
        ):
            return Holding(target, node)
        cause = look.record(
            RecordType.STOOD_BACK,
            f"vm.vfs_cache_pressure changed from {vfs.ours} to {readings.vfs_cache_pressure} "
            "by another writer; releasing it, not restoring",
            VFS_CACHE_PRESSURE,
        )
        release = ReleaseOwnership(cgroup=None, file=VFS_CACHE_PRESSURE, cause=cause)
        released = replace(node, vfs_owner=None, vfs_cache_pressure=None, proposed_vfs=None)
        return Holding(target, released, (release,))

    def restore_orphaned(
        self, look: Look, target: TargetState, node: NodeState, targets: Collection[TargetKey]
    ) -> Holding:
        """vm.vfs_cache_pressure raised for a cgroup that is gone (forgotten) has nobody
        left to roll it back when calm returns: restore it now rather than leave the node changed."""
        owner = node.vfs_owner
        owned = node.vfs_cache_pressure
        if owner is None or owned is None or owned.restore_requested:
            return Holding(target, node)
        if owner == look.key or owner in targets:
            return Holding(target, node)
        readings = look.node
        cause = Record(
            type=RecordType.ROLLED_BACK,
            message=(
                f"restore vm.vfs_cache_pressure to {owned.before} (ours: {owned.ours}): "
                f"{describe_target(owner.cgroup)}, whose pressure raised it, is gone"
            ),
            policy=owner.policy,
            cgroup=owner.cgroup,
            action=VFS_CACHE_PRESSURE,
            evidence=evidence_from(readings) if readings is not None else {},
        )
        restore = RestoreSysctl(name=VFS_CACHE_PRESSURE, ours=owned.ours, cause=cause)
        return Holding(
            target, replace(node, vfs_cache_pressure=replace(owned, restore_requested=True)), (restore,)
        )

    def calm_restore(self, look: Look, target: TargetState, node: NodeState, calm: str) -> Holding:
        vfs = node.vfs_cache_pressure
        if not _owned_by(look, node) or vfs is None or vfs.restore_requested:
            return Holding(target, node)
        cause = look.record(
            RecordType.ROLLED_BACK,
            f"restore vm.vfs_cache_pressure to {vfs.before} (ours: {vfs.ours}): {calm}",
            VFS_CACHE_PRESSURE,
        )
        restore = RestoreSysctl(name=VFS_CACHE_PRESSURE, ours=vfs.ours, cause=cause)
        return Holding(
            target, replace(node, vfs_cache_pressure=replace(vfs, restore_requested=True)), (restore,)
        )

    def exit_restores(
        self, targets: Mapping[TargetKey, TargetState], node: NodeState, wants_restore: Callable[[str], bool]
    ) -> Tuple[Mapping[TargetKey, TargetState], NodeState, Tuple[Action, ...]]:
        owner = node.vfs_owner
        vfs = node.vfs_cache_pressure
        if owner is None or vfs is None or vfs.restore_requested or not wants_restore(owner.policy):
            return {}, node, ()
        last = targets[owner].last_snapshot if owner in targets else None
        cause = Record(
            type=RecordType.ROLLED_BACK,
            message=f"restore vm.vfs_cache_pressure to {vfs.before} (ours: {vfs.ours}) on exit",
            policy=owner.policy,
            cgroup=owner.cgroup,
            action=VFS_CACHE_PRESSURE,
            evidence=evidence_from(last) if last is not None else {},
        )
        restore = RestoreSysctl(name=VFS_CACHE_PRESSURE, ours=vfs.ours, cause=cause)
        return {}, replace(node, vfs_cache_pressure=replace(vfs, restore_requested=True)), (restore,)

    def execute(self, action: Action, writer: KnobWriter[OutcomeT_co]) -> OutcomeT_co:
        if isinstance(action, RestoreSysctl):
            return writer.restore(OWNED, action.name)
        assert isinstance(action, SetSysctl)
        # expected None: the core had no reading to compare with; the write is still recorded.
        return writer.set_owned(
            OWNED, action.name, action.value, action.expected, check_expected=action.expected is not None
        )


def _owned_by(look: Look, node: NodeState) -> bool:
    """Whether the look's target is the one that owns vm.vfs_cache_pressure."""
    return node.vfs_owner == look.key and node.vfs_cache_pressure is not None


def _note_write(node: NodeState, action: SetSysctl, result: str, now: float) -> NodeState:
    proposal = node.proposed_vfs
    node = replace(node, proposed_vfs=None)
    if proposal is None or not (result in WRITTEN or result == SIMULATED):
        return node
    owned = ChangedValue(
        ours=action.value,
        before=proposal.before,
        written_at=now,
        stall_rate_at_write=proposal.write.stall_rate,
        events_high_at_write=None,
    )
    return replace(node, vfs_owner=proposal.owner, vfs_cache_pressure=owned)
