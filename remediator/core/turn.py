"""One decision in progress, the part that is not the ladder: measurement, records, and the
guards of what the target owns (``remediator.core.decide`` steps 1, 6, 7 and 8).

``TurnBase`` holds the turn's values (policy, the target's view, observation, now),
words its records, and checks on every look what a target owns: another writer
took a value over (stand back: each knob's ``release_if_changed``), our
memory.high throttles the cgroup (back off: ``back_off``), calm lasted (roll back:
``calm_restore``), the owner of vm.vfs_cache_pressure is gone (``restore_orphaned``).
``remediator.core.decide._Turn`` adds the episode and the ladder on top.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

from remediator.core.measure import measure, remember_look, stall_text
from remediator.core.reasons import reason_fields
from remediator.core.state import CoreConfig, NodeState, Observation, TargetView
from remediator.core.wording import describe_target, target_record
from remediator.diagnosis.composition import compose
from remediator.knobs import plugins
from remediator.knobs.base import Action, Holding, Look, RungContext
from remediator.policy.compiled import Policy
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import Knob, Record, RecordType, evidence_from

DECLINE_RECORD_INTERVAL_SEC = 60.0


class TurnBase:
    """The turn's values and the guards of what the target owns."""

    def __init__(
        self, policy: Policy, view: TargetView, obs: Observation, now: float, config: CoreConfig
    ) -> None:
        self.policy = policy
        self.view = view
        self.obs = obs
        self.key = obs.key
        self.now = now
        self.config = config
        previous = view.target
        self.m = measure(policy.trigger, previous, obs, now)
        # A new baseline (first look, counter reset) starts the history afresh.
        looks = previous.recent_looks if self.m.delta_us is not None else ()
        self.target = replace(
            previous,
            last_total_us=self.m.total_us,
            last_at=now,
            recent_looks=remember_look(policy.trigger, looks, now, self.m.total_us),
            last_snapshot=obs.snapshot,
        )
        self.node: NodeState = view.node
        self.evidence = evidence_from(obs.snapshot, self.m.delta_us)
        self.actions: List[Action] = []
        self.records: List[Record] = []
        self._context: Optional[RungContext] = None

    @property
    def node_readings(self) -> Optional[NodeSnapshot]:
        if self.obs.node is not None:
            return self.obs.node
        return self.obs.snapshot if isinstance(self.obs.snapshot, NodeSnapshot) else None

    @property
    def where(self) -> str:
        return describe_target(self.key.cgroup)

    def _record(self, record_type: RecordType, message: str, action: Optional[Knob] = None) -> Record:
        return target_record(self.policy, self.key, self.evidence, record_type, message, action)

    def _decline(
        self, reason: str, message: str, action: Optional[Knob] = None, rung: Optional[int] = None
    ) -> None:
        last = self.target.declined_at.get(reason)
        if last is not None and self.now - last < DECLINE_RECORD_INTERVAL_SEC:
            return
        self.target = self.target.with_declined(reason, self.now, DECLINE_RECORD_INTERVAL_SEC)
        self.records.append(
            target_record(
                self.policy,
                self.key,
                self.evidence,
                RecordType.ACTION_DECLINED,
                message,
                action,
                rung,
                result="declined",
                extra=reason_fields(reason),
            )
        )

    def _owns_vfs(self) -> bool:
        return self.node.vfs_owner == self.key and self.node.vfs_cache_pressure is not None

    def _clamped_elsewhere(self) -> int:
        """Other cgroups of this policy holding a memory.high of ours (for max_clamped_cgroups).
        The caller keeps the count as it stores target states (``CoreState.view``): no target is
        walked here."""
        if not any(spec.kind is Knob.MEMORY_HIGH for spec in self.policy.ladder):
            return 0
        return self.view.clamped_elsewhere

    def _rung_context(self) -> RungContext:
        if self._context is None:
            snapshot = self.obs.snapshot
            composition = compose(snapshot, self.obs.node) if isinstance(snapshot, CgroupSnapshot) else None
            owner = self.node.vfs_owner
            self._context = RungContext(
                policy=self.policy,
                key=self.key,
                snapshot=snapshot,
                node=self.node_readings,
                composition=composition,
                reclaim_supported=self.obs.reclaim_supported,
                evidence=self.evidence,
                stall_text=stall_text(self.policy.trigger, self.m),
                owned_memory_high=self.target.memory_high,
                memory_high_barred=self.target.memory_high_barred,
                owned_vfs=self.node.vfs_cache_pressure if self._owns_vfs() else None,
                vfs_owned_elsewhere=owner if owner is not None and owner != self.key else None,
                clamped_elsewhere=self._clamped_elsewhere(),
            )
        return self._context

    def _look(self) -> Look:
        return Look(
            self.policy,
            self.key,
            self.obs.snapshot,
            self.node_readings,
            self.evidence,
            self.now,
            self.m.total_us,
        )

    def _hold(self, holding: Holding) -> None:
        self.target = holding.target
        self.node = holding.node
        self.actions.extend(holding.actions)

    def _check_other_writers(self) -> None:
        """Each knob releases the values of ours another writer changed (stand back)."""
        for plugin in plugins():
            self._hold(plugin.release_if_changed(self._look(), self.target, self.node))

    def _restore_orphaned(self) -> None:
        """Each knob restores a node-wide value of ours whose owner is gone."""
        for plugin in plugins():
            self._hold(plugin.restore_orphaned(self._look(), self.target, self.node, self.view.watched))

    def _back_off(self) -> None:
        """Each knob backs off a value of ours that hurts the target (our memory.high throttling it)."""
        for plugin in plugins():
            self._hold(plugin.back_off(self._look(), self.target, self.node))

    def _roll_back(self) -> None:
        """Calm lasted: each knob asks to put the target's values of ours back."""
        calm = f"pressure stayed below the threshold for {self.policy.rollback.calm_sec:g} s"
        for plugin in plugins():
            self._hold(plugin.calm_restore(self._look(), self.target, self.node, calm))

    def _owns_anything(self) -> bool:
        look = self._look()
        return any(plugin.holds(look, self.target, self.node) for plugin in plugins())
