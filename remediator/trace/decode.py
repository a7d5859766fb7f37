"""Checking and decoding the records of a trace: every field named and range-checked, located by line.

The reader (``remediator.trace.reader``) splits the file into records; this module turns one record
into a header, or the changes it carries into snapshots, refusing anything the format does not allow.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional

from remediator import __version__
from remediator.kernel.memory_events import memory_events_from
from remediator.kernel.roots import InvalidCgroupName, normalize_cgroup
from remediator.readings import (
    CgroupSnapshot,
    MemoryStat,
    NodeSnapshot,
    Pressure,
    PressureLine,
)
from remediator.trace.format import (
    CGROUP_MAPS,
    CGROUP_SCALARS,
    MAP_FIELDS,
    MEMINFO_KEYS,
    NULLABLE_MAPS,
    SCHEMA,
    SCHEMA_PREFIX,
    NodeWatchMode,
    PolicyDigest,
    TargetTrigger,
    TraceCapabilities,
    TraceError,
    TraceHeader,
    TraceRecordType,
    TraceSource,
    TraceTriggers,
)

_UINT_LIMIT = 1 << 64

CGROUP_FIELDS = frozenset((*CGROUP_SCALARS, "some", "full", *CGROUP_MAPS))
NODE_FIELDS = frozenset(("some", "full", "meminfo", "vfs_cache_pressure"))
_NULLABLE_SCALARS = frozenset(("max", "high", "swap_max", "vfs_cache_pressure"))


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a trace holds")


def describe_value(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Checker:
    """Type checks that raise a TraceError located at the current line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.line = 0

    def fail(self, field: Optional[str], message: str) -> TraceError:
        return TraceError(self.path, self.line, field, message)

    def uint(self, value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _UINT_LIMIT:
            raise self.fail(field, f"expected a non-negative 64-bit integer, got {describe_value(value)}")
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
            raise self.fail(field, f"expected a non-negative number, got {describe_value(value)}")
        return float(value)

    def string(self, value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise self.fail(field, f"expected a string, got {describe_value(value)}")
        return value

    def boolean(self, value: Any, field: str, nullable: bool = False) -> Optional[bool]:
        if value is None and nullable:
            return None
        if not isinstance(value, bool):
            raise self.fail(field, f"expected true or false, got {describe_value(value)}")
        return value

    def obj(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected an object, got {describe_value(value)}")
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
            raise self.fail(field, f"expected [avg10, avg60, avg300, total_us], got {describe_value(value)}")
        avgs = [self.number(v, f"{field}[{i}]") for i, v in enumerate(value[:3])]
        return PressureLine(avgs[0], avgs[1], avgs[2], self.uint(value[3], f"{field}[3]"))

    def required(self, record: Mapping[str, Any], key: str) -> Any:
        if key not in record:
            raise self.fail(key, "missing")
        return record[key]


def decode_header(check: Checker, record: Mapping[str, Any]) -> TraceHeader:
    schema = record.get("schema")
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith(SCHEMA_PREFIX):
            raise check.fail(
                "schema", f"trace schema {schema!r} is not supported: remediator {__version__} reads {SCHEMA}"
            )
        raise check.fail("schema", f"not a remediator trace (expected schema {SCHEMA!r})")
    if record.get("type") != TraceRecordType.HEADER.value:
        raise check.fail(
            "type", f"the first record must be the header, got {describe_value(record.get('type'))}"
        )
    caps = check.obj(check.required(record, "capabilities"), "capabilities")
    watch_mode = caps.get("watch_mode")
    try:
        mode = NodeWatchMode(watch_mode)
    except ValueError:
        raise check.fail(
            "capabilities.watch_mode", f"unknown watch mode {describe_value(watch_mode)}"
        ) from None
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
        raise check.fail("source", f"unknown source {describe_value(source)}") from None
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
        triggers=None if record.get("triggers") is None else decode_triggers(check, record["triggers"]),
    )


def decode_triggers(check: Checker, value: Any) -> TraceTriggers:
    """The header's optional ``triggers`` (what ``remediator record`` armed)."""
    field = "triggers"
    triggers = check.obj(value, field)
    raw_targets = triggers.get("targets")
    if not isinstance(raw_targets, list):
        raise check.fail(f"{field}.targets", "expected a list")
    targets: List[TargetTrigger] = []
    for i, raw in enumerate(raw_targets):
        where = f"{field}.targets[{i}]"
        entry = check.obj(raw, where)
        cgroup = entry.get("cgroup")
        targets.append(
            TargetTrigger(
                policy=check.string(entry.get("policy"), f"{where}.policy"),
                cgroup=None if cgroup is None else check.cgroup(cgroup, f"{where}.cgroup"),
                trigger=check.string(entry.get("trigger"), f"{where}.trigger"),
                armed=bool(check.boolean(entry.get("armed"), f"{where}.armed")),
                reason=check.string(entry.get("reason", ""), f"{where}.reason"),
            )
        )
    armed_later = check.boolean(triggers.get("armed_later"), f"{field}.armed_later")
    return TraceTriggers(targets=tuple(targets), armed_later=bool(armed_later))


def apply_changes(
    check: Checker, state: Dict[str, Any], record: Mapping[str, Any], allowed: frozenset[str]
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


def require_all(check: Checker, state: Mapping[str, Any], fields: frozenset[str], what: str) -> None:
    missing = sorted(fields - state.keys())
    if missing:
        raise check.fail(
            missing[0], f"missing from the first record of {what} (a first record holds every field)"
        )


def cgroup_snapshot(name: str, state: Mapping[str, Any]) -> CgroupSnapshot:
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
        events=memory_events_from(state["events"]),
        pressure=Pressure(some=state["some"], full=state["full"]),
        events_local=None if local is None else memory_events_from(local),
    )


def node_snapshot(check: Checker, state: Mapping[str, Any]) -> NodeSnapshot:
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
