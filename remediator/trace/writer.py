"""Writing a ``remediator.trace/v1`` file: the header, then one line per record, delta-encoded.

The writer keeps the last full form it wrote for every cgroup and for the
node, and writes only what changed (``format.delta_fields``). ``flush`` makes
everything written so far readable from the file, also when it is gzip (a
sync flush: a few bytes per call), so that a recorder killed later leaves a
trace that reads up to its last flush.
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterable, Optional

from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.trace.format import (
    EndReason,
    JsonObject,
    TraceHeader,
    TraceRecordType,
    TraceTriggers,
    cgroup_fields,
    delta_fields,
    node_fields,
    record_time,
)

GZIP_SUFFIX = ".gz"


def header_json(header: TraceHeader) -> JsonObject:
    caps = header.capabilities
    start = datetime.fromtimestamp(header.start_wall, tz=timezone.utc)
    record: JsonObject = {
        "schema": header.schema,
        "type": TraceRecordType.HEADER.value,
        "node": header.node,
        "kernel_release": header.kernel_release,
        "remediator_version": header.remediator_version,
        "source": header.source.value,
        "interval_sec": header.interval_sec,
        "start_wall": header.start_wall,
        # For people reading the file; readers use start_wall.
        "start_utc": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "start_monotonic": header.start_monotonic,
        "capabilities": {
            "memory_reclaim": caps.memory_reclaim,
            "watch_mode": caps.watch_mode.value,
            "triggers_accepted": caps.triggers_accepted,
            "short_window_triggers": caps.short_window_triggers,
            "summary": list(caps.summary),
        },
        "policies": [{"file": p.file, "sha256": p.sha256} for p in header.policies],
        "stat_keys": list(header.stat_keys),
    }
    if header.triggers is not None:
        record["triggers"] = triggers_json(header.triggers)
    return record


def triggers_json(triggers: TraceTriggers) -> JsonObject:
    targets = []
    for target in triggers.targets:
        entry: JsonObject = {
            "policy": target.policy,
            "cgroup": target.cgroup,
            "trigger": target.trigger,
            "armed": target.armed,
        }
        if target.reason:
            entry["reason"] = target.reason
        targets.append(entry)
    return {"armed_later": triggers.armed_later, "targets": targets}


def encode_line(record: JsonObject) -> bytes:
    # ensure_ascii: a cgroup name holding undecodable bytes (kept as surrogates by the
    # readers) is written as \\udcXX escapes and read back as the same string.
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


class TraceWriter:
    """Writes records to a binary stream. Times are the recorder's monotonic clock.

    Raises ``OSError`` when the stream cannot be written (the caller's edge turns it
    into its own message) and ``ValueError`` for a time before the previous record's.
    """

    def __init__(self, stream: BinaryIO, header: TraceHeader, *, raw: Optional[BinaryIO] = None) -> None:
        self._stream = stream
        # The file under a gzip stream, flushed after it.
        self._raw = raw
        self.header = header
        self._cgroups: Dict[str, JsonObject] = {}
        self._node: Optional[JsonObject] = None
        self._last_t = 0.0
        self.lines_written = 0
        self.bytes_written = 0  # before compression
        self._ended = False
        self._write(header_json(header))

    @classmethod
    def create(cls, path: Path, header: TraceHeader) -> TraceWriter:
        """A new file (never an existing one: an incident's trace is not overwritten by accident),
        gzip when the name ends in ``.gz``."""
        # O_EXCL also refuses a symlink planted at the name.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        raw = os.fdopen(fd, "wb")
        if path.name.endswith(GZIP_SUFFIX):
            stream: BinaryIO = gzip.GzipFile(filename=path.name[: -len(GZIP_SUFFIX)], mode="wb", fileobj=raw)  # type: ignore[assignment]
            return cls(stream, header, raw=raw)
        return cls(raw, header)

    def _time(self, monotonic: float) -> float:
        t = record_time(monotonic - self.header.start_monotonic)
        if t < self._last_t:
            raise ValueError(f"trace time {t} is before the previous record's {self._last_t}")
        if t < 0:
            raise ValueError(f"time {monotonic} is before the header's start {self.header.start_monotonic}")
        self._last_t = t
        return t

    def _write(self, record: JsonObject) -> None:
        if self._ended:
            raise ValueError("the trace has ended")
        data = encode_line(record)
        self._stream.write(data)
        self.lines_written += 1
        self.bytes_written += len(data)

    def cgroup(self, monotonic: float, snapshot: CgroupSnapshot) -> None:
        self.cgroup_full_form(monotonic, snapshot.cgroup, cgroup_fields(snapshot, self.header.stat_keys))

    def cgroup_full_form(self, monotonic: float, cgroup: str, fields: JsonObject) -> None:
        """A cgroup record from a full form kept earlier (``format.cgroup_fields``: the flight recorder)."""
        record: JsonObject = {
            "type": TraceRecordType.CGROUP.value,
            "t": self._time(monotonic),
            "cgroup": cgroup,
        }
        record.update(delta_fields(self._cgroups.get(cgroup), fields))
        self._write(record)
        self._cgroups[cgroup] = fields

    def node(self, monotonic: float, snapshot: NodeSnapshot) -> None:
        self.node_full_form(monotonic, node_fields(snapshot))

    def node_full_form(self, monotonic: float, fields: JsonObject) -> None:
        """A node record from a full form kept earlier (``format.node_fields``)."""
        record: JsonObject = {"type": TraceRecordType.NODE.value, "t": self._time(monotonic)}
        record.update(delta_fields(self._node, fields))
        self._write(record)
        self._node = fields

    def gone(self, monotonic: float, cgroup: str) -> bool:
        """Say the cgroup is gone; False (nothing written) if it has no record to end."""
        if cgroup not in self._cgroups:
            return False
        self._write({"type": TraceRecordType.GONE.value, "t": self._time(monotonic), "cgroup": cgroup})
        del self._cgroups[cgroup]
        return True

    def trigger(self, monotonic: float, cgroup: Optional[str], policy: Optional[str] = None) -> None:
        record: Dict[str, Any] = {
            "type": TraceRecordType.TRIGGER.value,
            "t": self._time(monotonic),
            "cgroup": cgroup,
        }
        if policy is not None:
            record["policy"] = policy
        self._write(record)

    def end(self, monotonic: float, reason: EndReason, detail: str = "") -> None:
        record: JsonObject = {
            "type": TraceRecordType.END.value,
            "t": self._time(monotonic),
            "reason": reason.value,
        }
        if detail:
            record["detail"] = detail
        self._write(record)
        self._ended = True

    @property
    def cgroups(self) -> Iterable[str]:
        """The cgroups with a record and no ``gone`` since."""
        return tuple(self._cgroups)

    def flush(self) -> None:
        """Make every record written so far readable from the file."""
        self._stream.flush()  # GzipFile: a sync flush, so the compressed bytes so far decode
        if self._raw is not None:
            self._raw.flush()

    def close(self) -> None:
        """Close the stream (a gzip stream gets its end marker). Idempotent."""
        try:
            self._stream.close()
        finally:
            if self._raw is not None:
                self._raw.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
