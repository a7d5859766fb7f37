"""vm.drop_caches: a node-wide, write-only trigger (nothing to read back, own or restore).

It drops clean page cache and/or reclaimable slab for every tenant of the node, so only node policies
or cgroup policies that allow node-wide knobs take it (``remediator.core.ladder`` checks that).
"""

from __future__ import annotations

from typing import cast

from remediator.knobs.base import (
    Action,
    KnobFile,
    KnobPlugin,
    KnobWriter,
    OutcomeT_co,
    RungContext,
    RungOutcome,
    RungTake,
)
from remediator.knobs.sysctl import RestoreSysctl, SetSysctl
from remediator.policy.compiled import DropCachesAction
from remediator.records import Knob, RecordType

FILE = KnobFile.vm_sysctl("drop_caches")
MODES = frozenset({1, 2, 3})

_WHAT = {
    1: "clean page cache",
    2: "reclaimable slab (dentries and inodes)",
    3: "clean page cache and reclaimable slab",
}


class DropCaches(KnobPlugin):
    knob = Knob.DROP_CACHES
    node_writes = frozenset({FILE.file})

    def handles(self, action: Action) -> bool:
        return isinstance(action, (SetSysctl, RestoreSysctl)) and action.name == self.knob

    def plan(self, spec: object, index: int, ctx: RungContext) -> RungOutcome:
        drop = cast(DropCachesAction, spec)
        what = _WHAT.get(drop.mode, f"caches (mode {drop.mode})")
        message = f"drop {what} node-wide (vm.drop_caches={drop.mode}) for every tenant; {ctx.stall_text}"
        cause = ctx.record(RecordType.ACTION_APPLIED, message, drop.kind, index)
        return RungTake(SetSysctl(name=self.knob, value=drop.mode, expected=None, cause=cause))

    def execute(self, action: Action, writer: KnobWriter[OutcomeT_co]) -> OutcomeT_co:
        if isinstance(action, RestoreSysctl):
            return writer.finish(
                "not_restored", detail="no original value recorded: nothing of ours to give back"
            )
        assert isinstance(action, SetSysctl)
        if action.value not in MODES:
            return writer.finish("refused", detail=f"vm.drop_caches takes 1, 2 or 3, not {action.value}")
        # A write-only trigger: nothing to read back, nothing to own or restore.
        writer.write(FILE, str(action.value))
        return writer.finish("applied", after=str(action.value))
