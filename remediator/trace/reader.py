"""Reading a ``remediator.trace/v1`` file back into the snapshots that were written.

::

    with open_trace(path) as trace:          # reads and checks the header
        trace.header                          # TraceHeader
        for item in trace:                    # CgroupSample | NodeSample | CgroupRemoved
            ...                               #   | TriggerFired | TraceEnd, in file order
        trace.truncation                      # None, or where a cut file stops
        trace.end                             # the TraceEnd record, None if the recorder did not stop cleanly

Everything that can go wrong with the file is a ``TraceError`` naming the
file, the line and the field; nothing else escapes (no ``KeyError``, no
``json`` or ``zlib`` exception). A file cut by a crash is not an error: the
reader yields every complete line and reports the cut in ``truncation``.
gzip is recognised by its magic bytes, whatever the file is called.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Protocol, Tuple, Type

from remediator.readings import (
    NodeSnapshot,
)
from remediator.trace.decode import (
    CGROUP_FIELDS,
    NODE_FIELDS,
    Checker,
    apply_changes,
    cgroup_snapshot,
    decode_header,
    describe_value,
    node_snapshot,
    reject_constant,
    require_all,
)
from remediator.trace.format import (
    CgroupRemoved,
    CgroupSample,
    EndReason,
    NodeSample,
    TraceEnd,
    TraceError,
    TraceHeader,
    TraceItem,
    TraceRecordType,
    TraceTruncation,
    TriggerFired,
    TruncationReason,
)

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024
_OUTPUT_STEP = 8 * 1024
# A record is at most a few KiB (a header with a long capabilities summary); a
# "line" longer than this is a corrupted or foreign file, not a trace to buffer whole.
MAX_LINE_BYTES = 1 << 20
# The kernel's counters are 64-bit.


class _Readable(Protocol):
    def read(self, size: int) -> bytes: ...


class _Cut(Exception):
    """The gzip stream ended before its end marker."""


class _Corrupt(Exception):
    """The gzip stream could not be decompressed."""


def _gzip_chunks(raw: _Readable) -> Iterator[bytes]:
    # zlib directly rather than GzipFile: the data of a stream cut by a crash is
    # returned up to the cut (GzipFile may drop the last buffer with its EOFError),
    # and the cut is told from corruption.
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    member_started = False
    while True:
        chunk = raw.read(_CHUNK)
        if not chunk:
            if member_started and not decompressor.eof:
                raise _Cut
            return
        pending = chunk
        while pending:
            member_started = True
            try:
                # Bounded output per call: a small corrupted file must not expand in one go, and
                # zlib drops the output of the call that finds the damage, so small calls keep the
                # lines before it (and the error's line number) close to the damage.
                data = decompressor.decompress(pending, _OUTPUT_STEP)
            except zlib.error as exc:
                raise _Corrupt(str(exc)) from exc
            if data:
                yield data
            if decompressor.eof:
                # Another gzip member may follow (concatenated files read as one).
                pending = decompressor.unused_data
                decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                member_started = False
            else:
                pending = decompressor.unconsumed_tail


def _plain_chunks(raw: BinaryIO, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while True:
        chunk = raw.read(_CHUNK)
        if not chunk:
            return
        yield chunk


class TraceReader:
    """One pass over a trace file. Use ``open_trace``; iterate once."""

    def __init__(self, raw: BinaryIO, path: str) -> None:
        self._raw = raw
        self.path = path
        self._check = Checker(path)
        self.truncation: Optional[TraceTruncation] = None
        self.end: Optional[TraceEnd] = None
        first = raw.read(len(_GZIP_MAGIC))
        self.compressed = first == _GZIP_MAGIC
        chunks = _gzip_chunks(_Prefixed(first, raw)) if self.compressed else _plain_chunks(raw, first)
        self._lines = self._split(chunks)
        self._cgroups: Dict[str, Dict[str, Any]] = {}
        self._node: Optional[Dict[str, Any]] = None
        self.node_snapshot: Optional[NodeSnapshot] = None
        self._last_t = 0.0
        self._iterated = False
        header = next(self._records(), None)
        if header is None:
            where = self.truncation.reason.value if self.truncation else "the file is empty"
            raise TraceError(path, 1, None, f"no header: {where}")
        self.header = decode_header(self._check, header)

    # ----- lines and JSON

    def _split(self, chunks: Iterator[bytes]) -> Iterator[Tuple[int, bytes]]:
        buffer = bytearray()
        line = 0
        try:
            for chunk in chunks:
                buffer += chunk
                start = 0
                while True:
                    newline = buffer.find(b"\n", start)
                    if newline < 0:
                        break
                    line += 1
                    yield line, bytes(buffer[start:newline])
                    start = newline + 1
                del buffer[:start]
                if len(buffer) > MAX_LINE_BYTES:
                    raise TraceError(self.path, line + 1, None, f"longer than {MAX_LINE_BYTES} bytes")
        except _Cut:
            self.truncation = TraceTruncation(line + 1, TruncationReason.GZIP_CUT)
            return
        except _Corrupt as exc:
            raise TraceError(self.path, line + 1, None, f"corrupted gzip data ({exc})") from None
        except OSError as exc:
            raise TraceError(self.path, line + 1, None, f"cannot read: {exc.strerror or exc}") from None
        if buffer:
            self.truncation = TraceTruncation(line + 1, TruncationReason.INCOMPLETE_LINE)

    def _records(self) -> Iterator[Mapping[str, Any]]:
        for line, data in self._lines:
            self._check.line = line
            try:
                text = data.decode("utf-8")
                value = json.loads(text, parse_constant=reject_constant)
            except UnicodeDecodeError:
                raise self._check.fail(None, "not UTF-8 text") from None
            except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                raise self._check.fail(None, f"not a JSON record ({exc})") from None
            if not isinstance(value, dict):
                raise self._check.fail(None, f"expected a JSON object, got {describe_value(value)}")
            yield value

    # ----- records

    def __iter__(self) -> Iterator[TraceItem]:
        if self._iterated:
            raise RuntimeError("a TraceReader is iterated once")
        self._iterated = True
        for record in self._records():
            item = self._item(record)
            if self.end is not None:
                raise self._check.fail("type", "a record after the end record")
            if isinstance(item, TraceEnd):
                self.end = item
            yield item

    def _time(self, record: Mapping[str, Any]) -> float:
        t = self._check.number(self._check.required(record, "t"), "t")
        if t < self._last_t:
            raise self._check.fail("t", f"{t} is before the previous record's {self._last_t}")
        self._last_t = t
        return t

    def _item(self, record: Mapping[str, Any]) -> TraceItem:
        check = self._check
        kind = record.get("type")
        try:
            record_type = TraceRecordType(kind)
        except ValueError:
            raise check.fail("type", f"unknown record type {describe_value(kind)}") from None
        t = self._time(record) if record_type is not TraceRecordType.HEADER else 0.0
        if record_type is TraceRecordType.CGROUP:
            name = check.cgroup(check.required(record, "cgroup"), "cgroup")
            state = self._cgroups.get(name)
            first = state is None
            state = {} if state is None else dict(state)
            apply_changes(check, state, record, CGROUP_FIELDS)
            if first:
                require_all(check, state, CGROUP_FIELDS, f"cgroup {name!r}")
            self._cgroups[name] = state
            return CgroupSample(t, cgroup_snapshot(name, state), self.node_snapshot, check.line)
        if record_type is TraceRecordType.NODE:
            first = self._node is None
            state = {} if self._node is None else dict(self._node)
            apply_changes(check, state, record, NODE_FIELDS)
            if first:
                require_all(check, state, NODE_FIELDS, "the node")
            snapshot = node_snapshot(check, state)
            self._node, self.node_snapshot = state, snapshot
            return NodeSample(t, snapshot, check.line)
        if record_type is TraceRecordType.GONE:
            name = check.cgroup(check.required(record, "cgroup"), "cgroup")
            if self._cgroups.pop(name, None) is None:
                raise check.fail("cgroup", f"{name!r} is gone but has no record before")
            return CgroupRemoved(t, name, check.line)
        if record_type is TraceRecordType.TRIGGER:
            target = check.required(record, "cgroup")
            policy = record.get("policy")
            return TriggerFired(
                t,
                None if target is None else check.cgroup(target, "cgroup"),
                None if policy is None else check.string(policy, "policy"),
                check.line,
            )
        if record_type is TraceRecordType.END:
            reason = record.get("reason")
            try:
                end_reason = EndReason(reason)
            except ValueError:
                raise check.fail("reason", f"unknown end reason {describe_value(reason)}") from None
            return TraceEnd(t, end_reason, check.string(record.get("detail", ""), "detail"), check.line)
        raise check.fail("type", "a second header")

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(
        self, _t: Optional[Type[BaseException]], _e: Optional[BaseException], _tb: Optional[TracebackType]
    ) -> None:
        self.close()


class _Prefixed:
    """A binary stream whose first bytes were already read (to look for the gzip magic)."""

    def __init__(self, first: bytes, raw: BinaryIO) -> None:
        self._first = first
        self._raw = raw

    def read(self, size: int) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        return self._raw.read(size)


def open_trace(path: Path) -> TraceReader:
    """Open a trace and read its header. Raises ``TraceError`` (also when the file cannot be opened)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - the reader owns and closes it
    except OSError as exc:
        raise TraceError(str(path), 0, None, f"cannot open: {exc.strerror or exc}") from None
    try:
        return TraceReader(raw, str(path))
    except BaseException:
        raw.close()
        raise


def read_trace(path: Path) -> Tuple[TraceHeader, List[TraceItem], Optional[TraceTruncation]]:
    """The whole trace in memory: header, items, and where a cut file stops."""
    with open_trace(path) as trace:
        items = list(trace)
        return trace.header, items, trace.truncation
