"""Selecting the daemon's JSON records by type and cgroup, and putting them in a scenario's report."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from remediator.records import RecordType
from tests.vm.guest.lib import Daemon

Record = Dict[str, Any]
RecordPredicate = Callable[[Record], bool]


def of_type(record_type: RecordType, cgroup: Optional[str] = None) -> RecordPredicate:
    """Records of ``record_type``, about ``cgroup`` when one is given (as REMEDIATOR_CGROUP spells it)."""

    def matches(record: Record) -> bool:
        if record.get("MESSAGE_ID") != record_type.message_id:
            return False
        return cgroup is None or record.get("REMEDIATOR_CGROUP") == cgroup

    return matches


def for_report(daemon: Daemon, started_at: float) -> List[Record]:
    """Every record so far, with its arrival as ``ARRIVED_SEC`` after ``started_at`` (guest monotonic
    seconds) and its type's name as ``RECORD_TYPE``, so that a failing host assertion reads plainly."""
    names = {record_type.message_id: record_type.name for record_type in RecordType}
    out: List[Record] = []
    for record in daemon.snapshot():
        doc = {key: value for key, value in record.items() if key != "_ARRIVED"}
        doc["ARRIVED_SEC"] = round(float(record["_ARRIVED"]) - started_at, 3)
        doc["RECORD_TYPE"] = names.get(str(record.get("MESSAGE_ID")), "?")
        out.append(doc)
    return out
