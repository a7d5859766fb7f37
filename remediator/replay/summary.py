"""What a replay did, per cgroup: when pressure came, when and how the daemon answered.

- **first pressure**: the first PSI trigger fired on the cgroup (replayed
  from the trace), or, where the kernel refused triggers and the daemon
  sampled, its first PRESSURE_CONFIRMED record;
- **first action**: the first write it asked for (ACTION_APPLIED: ``would``
  in a replay), and its delay after the first pressure;
- **actions**: every record about a knob (applied, failed, stood back,
  backed off, rolled back), counted by kind and result; a coalesced summary
  (``REMEDIATOR_REPEATED=N``) counts for the N decisions it stands for;
- **declines**: ACTION_DECLINED records by reason (each reason is recorded at
  most once a minute per target, so these count records, not looks);
- **owned at the end**: what the daemon would hold changed when the trace
  ends (nothing restores it in a replay: the trace ending is not the daemon
  stopping).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from remediator.records import Record, RecordType
from remediator.replay.engine import Owned, ReplayResult

REASON_FIELD = "REASON"
NODE_LABEL = "(node)"

# Records about a knob, and the word each is counted under.
_ACTION_WORDS: Dict[RecordType, str] = {
    RecordType.ACTION_APPLIED: "",
    RecordType.ACTION_FAILED: "",
    RecordType.STOOD_BACK: "stood back: ",
    RecordType.BACKED_OFF: "backed off: ",
    RecordType.ROLLED_BACK: "rolled back: ",
}
_WROTE = frozenset({"would", "applied", "partial"})


@dataclass
class CgroupSummary:
    cgroup: Optional[str]  # None: the node
    first_pressure: Optional[float] = None
    first_pressure_source: str = ""
    first_action: Optional[float] = None
    first_action_kind: str = ""
    actions: Counter[Tuple[str, str]] = field(default_factory=Counter)
    declines: Counter[str] = field(default_factory=Counter)
    owned: List[Owned] = field(default_factory=list)

    @property
    def label(self) -> str:
        return NODE_LABEL if self.cgroup is None else self.cgroup

    @property
    def action_delay(self) -> Optional[float]:
        if self.first_action is None or self.first_pressure is None:
            return None
        return self.first_action - self.first_pressure

    def as_json(self) -> Dict[str, object]:
        return {
            "cgroup": self.cgroup,
            "first_pressure_t": self.first_pressure,
            "first_pressure_from": self.first_pressure_source or None,
            "first_action_t": self.first_action,
            "first_action": self.first_action_kind or None,
            "first_action_delay_sec": self.action_delay,
            "actions": [
                {"action": kind, "result": result, "count": count}
                for (kind, result), count in sorted(self.actions.items())
            ],
            "declines": [
                {"reason": reason, "count": count} for reason, count in sorted(self.declines.items())
            ],
            "owned_at_end": [
                {"policy": o.policy, "knob": o.knob, "value": o.ours, "before": o.before} for o in self.owned
            ],
        }


def summarize(result: ReplayResult) -> List[CgroupSummary]:
    """One summary per cgroup the trace recorded or a record names, the node's last (module docstring)."""
    rows: Dict[Optional[str], CgroupSummary] = {}

    def _stands_for(record: Record) -> int:
        # The first record of a kind is one decision; the summary that closes its window, N more.
        return int(record.extra.get("REPEATED", "1"))

    def row(cgroup: Optional[str]) -> CgroupSummary:
        if cgroup not in rows:
            rows[cgroup] = CgroupSummary(cgroup)
        return rows[cgroup]

    for name in sorted(result.recorded_cgroups):
        row(name)
    for firing in result.firings:
        summary = row(firing.cgroup)
        if summary.first_pressure is None:
            summary.first_pressure, summary.first_pressure_source = firing.t, "PSI trigger"
    for timed in result.records:
        record = timed.record
        if (
            record.cgroup is None
            and record.action is None
            and record.type is not RecordType.PRESSURE_CONFIRMED
        ):
            continue  # the daemon's own records (started, policy loaded, ...)
        summary = row(record.cgroup)
        if record.type is RecordType.PRESSURE_CONFIRMED and summary.first_pressure is None:
            summary.first_pressure, summary.first_pressure_source = timed.t, "pressure confirmed"
        elif record.type is RecordType.ACTION_DECLINED:
            summary.declines[record.extra.get(REASON_FIELD) or record.message] += _stands_for(record)
        elif record.type in _ACTION_WORDS and record.action is not None:
            kind = _ACTION_WORDS[record.type] + str(record.action)
            summary.actions[(kind, record.result)] += _stands_for(record)
            if (
                record.type is RecordType.ACTION_APPLIED
                and record.result in _WROTE
                and summary.first_action is None
            ):
                summary.first_action, summary.first_action_kind = (
                    timed.t,
                    f"{record.action} ({record.result})",
                )
    for owned in result.owned:
        row(owned.cgroup).owned.append(owned)
    return sorted(rows.values(), key=lambda s: (s.cgroup is None, s.cgroup or ""))


__all__ = ["CgroupSummary", "summarize"]
