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
import math
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Protocol, Tuple, Type

from remediator import __version__
from remediator.kernel.roots import InvalidCgroupName, normalize_cgroup
from remediator.readings import (
    CgroupSnapshot,
    MemoryEvents,
    MemoryStat,
    NodeSnapshot,
    Pressure,
    PressureLine,
)
from remediator.trace.format import (
    CGROUP_MAPS,
    CGROUP_SCALARS,
    EVENT_KEYS,
    MAP_FIELDS,
    MEMINFO_KEYS,
    NULLABLE_MAPS,
    SCHEMA,
    SCHEMA_PREFIX,
    CgroupRemoved,
    CgroupSample,
    EndReason,
    NodeSample,
    NodeWatchMode,
    PolicyDigest,
    TraceCapabilities,
    TraceEnd,
    TraceError,
    TraceHeader,
    TraceItem,
    TraceRecordType,
    TraceSource,
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
_UINT_LIMIT = 1 << 64

_CGROUP_FIELDS = frozenset((*CGROUP_SCALARS, "some", "full", *CGROUP_MAPS))
_NODE_FIELDS = frozenset(("some", "full", "meminfo", "vfs_cache_pressure"))
_NULLABLE_SCALARS = frozenset(("max", "high", "swap_max", "vfs_cache_pressure"))


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a trace holds")


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
    """Type checks that raise a TraceError located at the current line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.line = 0

    def fail(self, field: Optional[str], message: str) -> TraceError:
        return TraceError(self.path, self.line, field, message)

    def uint(self, value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _UINT_LIMIT:
            raise self.fail(field, f"expected a non-negative 64-bit integer, got {_describe(value)}")
        return value

    def optional_uint(self, value: Any, field: str) -> Optional[int]:
        return None if value is None else self.uint(value, field)

    def number(self, value: Any, field: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise self.fail(field, f"expected a non-negative number, got {_describe(value)}")
        return float(value)

    def string(self, value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise self.fail(field, f"expected a string, got {_describe(value)}")
        return value

    def boolean(self, value: Any, field: str, nullable: bool = False) -> Optional[bool]:
        if value is None and nullable:
            return None
        if not isinstance(value, bool):
            raise self.fail(field, f"expected true or false, got {_describe(value)}")
        return value

    def obj(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected an object, got {_describe(value)}")
        return value

    def cgroup(self, value: Any, field: str) -> str:
        name = self.string(value, field)
        try:
            if normalize_cgroup(name) != name:
                raise self.fail(field, f"{name!r} is not a cgroup name as the readers write it")
        except InvalidCgroupName as exc:
            raise self.fail(field, str(exc)) from exc
        return name

    def pressure_line(self, value: Any, field: str) -> PressureLine:
        if not isinstance(value, list) or len(value) != 4:
            raise self.fail(field, f"expected [avg10, avg60, avg300, total_us], got {_describe(value)}")
        avgs = [self.number(v, f"{field}[{i}]") for i, v in enumerate(value[:3])]
        return PressureLine(avgs[0], avgs[1], avgs[2], self.uint(value[3], f"{field}[3]"))

    def required(self, record: Mapping[str, Any], key: str) -> Any:
        if key not in record:
            raise self.fail(key, "missing")
        return record[key]


def _header(check: _Checker, record: Mapping[str, Any]) -> TraceHeader:
    schema = record.get("schema")
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith(SCHEMA_PREFIX):
            raise check.fail(
                "schema", f"trace schema {schema!r} is not supported: remediator {__version__} reads {SCHEMA}"
            )
        raise check.fail("schema", f"not a remediator trace (expected schema {SCHEMA!r})")
    if record.get("type") != TraceRecordType.HEADER.value:
        raise check.fail("type", f"the first record must be the header, got {_describe(record.get('type'))}")
    caps = check.obj(check.required(record, "capabilities"), "capabilities")
    watch_mode = caps.get("watch_mode")
    try:
        mode = NodeWatchMode(watch_mode)
    except ValueError:
        raise check.fail("capabilities.watch_mode", f"unknown watch mode {_describe(watch_mode)}") from None
    summary = caps.get("summary", [])
    if not isinstance(summary, list):
        raise check.fail("capabilities.summary", "expected a list of strings")
    policies: List[PolicyDigest] = []
    raw_policies = check.required(record, "policies")
    if not isinstance(raw_policies, list):
        raise check.fail("policies", "expected a list")
    for i, raw_entry in enumerate(raw_policies):
        entry = check.obj(raw_entry, f"policies[{i}]")
        policies.append(
            PolicyDigest(
                file=check.string(entry.get("file"), f"policies[{i}].file"),
                sha256=check.string(entry.get("sha256"), f"policies[{i}].sha256"),
            )
        )
    source = record.get("source")
    try:
        trace_source = TraceSource(source)
    except ValueError:
        raise check.fail("source", f"unknown source {_describe(source)}") from None
    interval = record.get("interval_sec")
    stat_keys = check.required(record, "stat_keys")
    if not isinstance(stat_keys, list):
        raise check.fail("stat_keys", "expected a list of strings")
    return TraceHeader(
        node=check.string(check.required(record, "node"), "node"),
        kernel_release=check.string(check.required(record, "kernel_release"), "kernel_release"),
        capabilities=TraceCapabilities(
            memory_reclaim=bool(check.boolean(caps.get("memory_reclaim"), "capabilities.memory_reclaim")),
            watch_mode=mode,
            triggers_accepted=check.boolean(
                caps.get("triggers_accepted"), "capabilities.triggers_accepted", nullable=True
            ),
            short_window_triggers=check.boolean(
                caps.get("short_window_triggers"), "capabilities.short_window_triggers", nullable=True
            ),
            summary=tuple(check.string(s, f"capabilities.summary[{i}]") for i, s in enumerate(summary)),
        ),
        policies=tuple(policies),
        start_wall=check.number(check.required(record, "start_wall"), "start_wall"),
        start_monotonic=check.number(check.required(record, "start_monotonic"), "start_monotonic"),
        source=trace_source,
        interval_sec=None if interval is None else check.number(interval, "interval_sec"),
        remediator_version=check.string(record.get("remediator_version", ""), "remediator_version"),
        stat_keys=tuple(check.string(k, f"stat_keys[{i}]") for i, k in enumerate(stat_keys)),
        schema=SCHEMA,
    )


def _apply(
    check: _Checker, state: Dict[str, Any], record: Mapping[str, Any], allowed: frozenset[str]
) -> None:
    """Apply a record's delta to a full form (docs/trace-format.md, "Delta encoding"), checking
    every value it brings."""
    for key, value in record.items():
        if key not in allowed:
            continue  # "type", "t", "cgroup", and fields a later v1 writer may add
        if key in MAP_FIELDS:
            if value is None:
                if key not in NULLABLE_MAPS:
                    raise check.fail(key, "expected an object, got null")
                state[key] = None
                continue
            changes = check.obj(value, key)
            before = state.get(key)
            merged: Dict[str, int] = dict(before) if isinstance(before, dict) else {}
            for name, count in changes.items():
                if count is None:
                    merged.pop(name, None)
                else:
                    merged[name] = check.uint(count, f"{key}.{name}")
            state[key] = merged
        elif key in ("some", "full"):
            if value is None and key == "full":
                state[key] = None
            else:
                state[key] = check.pressure_line(value, key)
        elif key in _NULLABLE_SCALARS:
            state[key] = check.optional_uint(value, key)
        else:
            state[key] = check.uint(value, key)


def _events(values: Mapping[str, int]) -> MemoryEvents:
    known = {key: values.get(key, 0) for key in EVENT_KEYS}
    return MemoryEvents(
        low=known["low"],
        high=known["high"],
        max=known["max"],
        oom=known["oom"],
        oom_kill=known["oom_kill"],
        oom_group_kill=known["oom_group_kill"],
        other={key: value for key, value in values.items() if key not in known},
    )


def _require_all(check: _Checker, state: Mapping[str, Any], fields: frozenset[str], what: str) -> None:
    missing = sorted(fields - state.keys())
    if missing:
        raise check.fail(
            missing[0], f"missing from the first record of {what} (a first record holds every field)"
        )


def _cgroup_snapshot(name: str, state: Mapping[str, Any]) -> CgroupSnapshot:
    local = state["events_local"]
    return CgroupSnapshot(
        cgroup=name,
        current_bytes=state["current"],
        max_bytes=state["max"],
        high_bytes=state["high"],
        min_bytes=state["min"],
        low_bytes=state["low"],
        swap_max_bytes=state["swap_max"],
        stat=MemoryStat(values=dict(state["stat"])),
        events=_events(state["events"]),
        pressure=Pressure(some=state["some"], full=state["full"]),
        events_local=None if local is None else _events(local),
    )


def _node_snapshot(check: _Checker, state: Mapping[str, Any]) -> NodeSnapshot:
    meminfo = state["meminfo"]
    for key in MEMINFO_KEYS:
        if key not in meminfo:
            raise check.fail(f"meminfo.{key}", "missing (a node record needs every meminfo key)")
    return NodeSnapshot(
        pressure=Pressure(some=state["some"], full=state["full"]),
        mem_total_bytes=meminfo["MemTotal"],
        mem_available_bytes=meminfo["MemAvailable"],
        swap_total_bytes=meminfo["SwapTotal"],
        swap_free_bytes=meminfo["SwapFree"],
        slab_reclaimable_bytes=meminfo["SReclaimable"],
        vfs_cache_pressure=state["vfs_cache_pressure"],
    )


class TraceReader:
    """One pass over a trace file. Use ``open_trace``; iterate once."""

    def __init__(self, raw: BinaryIO, path: str) -> None:
        self._raw = raw
        self.path = path
        self._check = _Checker(path)
        self.truncation: Optional[TraceTruncation] = None
        self.end: Optional[TraceEnd] = None
        first = raw.read(len(_GZIP_MAGIC))
        self.compressed = first == _GZIP_MAGIC
        chunks = _gzip_chunks(_Prefixed(first, raw)) if self.compressed else _plain_chunks(raw, first)
        self._lines = self._split(chunks)
        self._cgroups: Dict[str, Dict[str, Any]] = {}
        self._node: Optional[Dict[str, Any]] = None
        self._node_snapshot: Optional[NodeSnapshot] = None
        self._last_t = 0.0
        self._iterated = False
        header = next(self._records(), None)
        if header is None:
            where = self.truncation.reason.value if self.truncation else "the file is empty"
            raise TraceError(path, 1, None, f"no header: {where}")
        self.header = _header(self._check, header)

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
                value = json.loads(text, parse_constant=_reject_constant)
            except UnicodeDecodeError:
                raise self._check.fail(None, "not UTF-8 text") from None
            except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                raise self._check.fail(None, f"not a JSON record ({exc})") from None
            if not isinstance(value, dict):
                raise self._check.fail(None, f"expected a JSON object, got {_describe(value)}")
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
            raise check.fail("type", f"unknown record type {_describe(kind)}") from None
        t = self._time(record) if record_type is not TraceRecordType.HEADER else 0.0
        if record_type is TraceRecordType.CGROUP:
            name = check.cgroup(check.required(record, "cgroup"), "cgroup")
            state = self._cgroups.get(name)
            first = state is None
            state = {} if state is None else dict(state)
            _apply(check, state, record, _CGROUP_FIELDS)
            if first:
                _require_all(check, state, _CGROUP_FIELDS, f"cgroup {name!r}")
            self._cgroups[name] = state
            return CgroupSample(t, _cgroup_snapshot(name, state), self._node_snapshot, check.line)
        if record_type is TraceRecordType.NODE:
            first = self._node is None
            state = {} if self._node is None else dict(self._node)
            _apply(check, state, record, _NODE_FIELDS)
            if first:
                _require_all(check, state, _NODE_FIELDS, "the node")
            snapshot = _node_snapshot(check, state)
            self._node, self._node_snapshot = state, snapshot
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
                raise check.fail("reason", f"unknown end reason {_describe(reason)}") from None
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
