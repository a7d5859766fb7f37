"""Coalescing of repeated records: the journal volume per target stays bounded.

Under sustained pressure the core takes the same decision again and again (a
dry-run reclaim that changes nothing, an escalation that finds the ladder where
it was). Measured before this module: one cgroup wrote 22 "would reclaim" and
21 "pressure did not fall" records in 40 s at notice priority. A reader learns
nothing from the 2nd to the 22nd; a journal with a rate limit (journald's
default is 10000 messages per 30 s per service) loses *other* records to them.

The rule: the first record of a kind (type, policy, cgroup, action, result,
reason) goes out as it is and opens a window of ``interval_sec``. Later ones in
the window are counted, not written. When the window ends, one summary goes
out if any were held: the latest of them, its message ending "(repeated N more
times in S s)", with ``REMEDIATOR_REPEATED`` = N and ``REMEDIATOR_REPEATED_SEC``
= S. The next record of the kind opens a new window. ``flush`` writes the held
counts at stop and at the end of --once, so no count is lost. Per target and
kind that is at most two records per interval (the first and one summary).

Daemon-level records (start, stop, reload, policies, the state file) are rare
and each says something new: they always go out. So do the watch records: each
start is paired with an end (a cgroup created again under its name starts again).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from remediator.records import Record, RecordType

# One summary per kind and target per minute: under sustained pressure a target
# then writes at most a handful of records a minute, whatever the sampling rate.
COALESCE_INTERVAL_SEC = 60.0

COALESCED_TYPES = frozenset(
    {
        RecordType.PRESSURE_CONFIRMED,
        RecordType.ACTION_APPLIED,
        RecordType.ACTION_DECLINED,
        RecordType.ACTION_FAILED,
        RecordType.ESCALATED,
        RecordType.STOOD_BACK,
    }
)

_Key = Tuple[RecordType, str, Optional[str], str, str, str, str, str]


def _key(record: Record) -> _Key:
    # The decision's own words: its reason, and whether it is a follow-up or a repeat of a reclaim
    # that helped in part (a proactive reclaim, or one taken again at its verdict, is another
    # decision than the answer to pressure that preceded it).
    reason = record.extra.get("REASON_KEY", record.extra.get("REASON", ""))
    action = "" if record.action is None else record.action.value
    follow_up = record.extra.get("FOLLOW_UP", "")
    helped_in_part = record.extra.get("HELPED_IN_PART", "")
    return (
        record.type,
        record.policy,
        record.cgroup,
        action,
        str(record.result),
        reason,
        follow_up,
        helped_in_part,
    )


@dataclass
class _Window:
    """A kind of record written at ``opened_at``; ``held`` later ones counted, ``latest`` the newest."""

    opened_at: float
    held: int = 0
    latest: Optional[Record] = None


@dataclass
class RecordCoalescer:
    interval_sec: float = COALESCE_INTERVAL_SEC
    # Insertion order is opening order (time only moves forward): the oldest window is first.
    _windows: Dict[_Key, _Window] = field(default_factory=dict)

    def admit(self, record: Record, now: float) -> List[Record]:
        """What to write now: the summaries of windows that ended, then ``record`` unless it is held."""
        out = self.due(now)
        if record.type not in COALESCED_TYPES:
            out.append(record)
            return out
        key = _key(record)
        window = self._windows.get(key)
        if window is None:
            self._windows[key] = _Window(opened_at=now)
            out.append(record)
        else:
            window.held += 1
            window.latest = record
        return out

    def due(self, now: float) -> List[Record]:
        """Summaries of the windows that ended by ``now`` (the service asks on every turn)."""
        out: List[Record] = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now - window.opened_at < self.interval_sec:
                break
            del self._windows[key]
            if window.latest is not None:
                out.append(_summary(window, now))
        return out

    def flush(self, now: float) -> List[Record]:
        """Every held count, whatever its window (stop, the end of --once): no count is lost."""
        out = [_summary(w, now) for w in self._windows.values() if w.latest is not None]
        self._windows.clear()
        return out


def _summary(window: _Window, now: float) -> Record:
    latest = window.latest
    assert latest is not None
    seconds = f"{now - window.opened_at:.0f}"
    extra = {**latest.extra, "REPEATED": str(window.held), "REPEATED_SEC": seconds}
    message = f"{latest.message} (repeated {window.held} more times in {seconds} s)"
    return replace(latest, message=message, extra=extra)
