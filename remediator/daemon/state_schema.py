"""The state file's contents: the values it records and their strict on-disk schema.

``OwnedValue`` is one value remediator changed (its original, the value we wrote,
a write announced but not confirmed, the cgroup's id). The pydantic models below
are the JSON schema (``schema_version`` 1), strict: only the kinds and names
remediator owns, integers in the kernel's ranges, canonical cgroup names. The
store (``remediator.daemon.state_store``) reads and writes files with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field

from remediator.kernel.roots import InvalidCgroupName, normalize_cgroup

SCHEMA_VERSION = 1

KIND_MEMORY_HIGH = "memory_high"
KIND_SYSCTL = "sysctl"
# drop_caches is a write-only trigger: there is nothing to own or restore.
OWNABLE_SYSCTLS = frozenset({"vfs_cache_pressure"})

# The kernel's memory limits are page counters; in bytes they stay below 2**63.
MAX_LIMIT_BYTES = 2**63 - 1
# vm.vfs_cache_pressure is a C int.
MAX_SYSCTL_VALUE = 2**31 - 1
# A store with an entry per cgroup of a big node is a few hundred KiB; anything
# much larger is not ours.
MAX_STATE_FILE_BYTES = 4 * 1024 * 1024

# The longest cgroup name an entry may hold (PATH_MAX), and cgroup ids are 64-bit inode numbers.
MAX_CGROUP_NAME = 4096
MAX_CGROUP_ID = 2**64 - 1

StoreKey = Tuple[str, str]  # (kind, cgroup name or sysctl name)


@dataclass(frozen=True)
class PendingWrite:
    """A write announced but not yet confirmed; ``value`` None means "max"."""

    value: Optional[int]


@dataclass(frozen=True)
class OwnedValue:
    """One value we changed. Limits use None for "max", as in remediator.knobs.memory_high."""

    kind: str  # KIND_MEMORY_HIGH | KIND_SYSCTL
    name: str  # the cgroup (relative to the cgroup root) or the sysctl name
    original: Optional[int]
    ours: Optional[int]  # the value we last wrote (the original until our first write lands)
    policy: str
    recorded_at: float  # wall time of the first recording
    pending: Optional[PendingWrite] = None
    # memory.high: the id (directory inode) of the cgroup the original was read from; None in
    # files written before it was recorded. Another id under the same name is another cgroup.
    cgroup_id: Optional[int] = None

    @property
    def key(self) -> StoreKey:
        return (self.kind, self.name)

    def is_ours(self, current: Optional[int]) -> bool:
        """Whether a value read from the kernel is one we wrote (or were writing at a crash)."""
        if current == self.ours:
            return True
        return self.pending is not None and current == self.pending.value


# ---- the on-disk schema -------------------------------------------------------

_LimitBytes = Annotated[int, Field(ge=0, le=MAX_LIMIT_BYTES)]
_SysctlValue = Annotated[int, Field(ge=0, le=MAX_SYSCTL_VALUE)]
_Policy = Annotated[str, Field(max_length=256)]
_WallTime = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _PendingLimit(_StrictModel):
    value: Union[Literal["max"], _LimitBytes]


class _PendingSysctl(_StrictModel):
    value: _SysctlValue


class _MemoryHighEntry(_StrictModel):
    kind: Literal["memory_high"]
    cgroup: Annotated[str, Field(min_length=1, max_length=MAX_CGROUP_NAME)]
    cgroup_id: Optional[Annotated[int, Field(ge=0, le=MAX_CGROUP_ID)]] = None
    original: Union[Literal["max"], _LimitBytes]
    ours: Union[Literal["max"], _LimitBytes]
    pending: Optional[_PendingLimit] = None
    policy: _Policy
    recorded_at: _WallTime


class _SysctlEntry(_StrictModel):
    kind: Literal["sysctl"]
    sysctl: Literal["vfs_cache_pressure"]
    # Never 0: the executor leaves a node at 0 alone (a deliberate, dangerous setting it will not
    # take over), so an entry that would restore 0 was not written by us.
    original: Annotated[int, Field(ge=1, le=MAX_SYSCTL_VALUE)]
    ours: _SysctlValue
    pending: Optional[_PendingSysctl] = None
    policy: _Policy
    recorded_at: _WallTime


class StateFileModel(_StrictModel):
    schema_version: Literal[1]
    entries: List[Annotated[Union[_MemoryHighEntry, _SysctlEntry], Field(discriminator="kind")]]


def _limit_from_json(value: Union[str, int]) -> Optional[int]:
    return None if value == "max" else int(value)


def _limit_to_json(value: Optional[int]) -> Union[str, int]:
    return "max" if value is None else value


def owned_from_model(entry: Union[_MemoryHighEntry, _SysctlEntry]) -> OwnedValue:
    if isinstance(entry, _MemoryHighEntry):
        canonical = normalize_cgroup(entry.cgroup)  # raises InvalidCgroupName
        if canonical != entry.cgroup or canonical == "":
            raise InvalidCgroupName(f"cgroup name {entry.cgroup!r} is not in canonical form")
        return OwnedValue(
            kind=KIND_MEMORY_HIGH,
            name=entry.cgroup,
            original=_limit_from_json(entry.original),
            ours=_limit_from_json(entry.ours),
            policy=entry.policy,
            recorded_at=entry.recorded_at,
            pending=None if entry.pending is None else PendingWrite(_limit_from_json(entry.pending.value)),
            cgroup_id=entry.cgroup_id,
        )
    return OwnedValue(
        kind=KIND_SYSCTL,
        name=entry.sysctl,
        original=entry.original,
        ours=entry.ours,
        policy=entry.policy,
        recorded_at=entry.recorded_at,
        pending=None if entry.pending is None else PendingWrite(entry.pending.value),
    )


def _owned_to_json(value: OwnedValue) -> Dict[str, Any]:
    name_field = "cgroup" if value.kind == KIND_MEMORY_HIGH else "sysctl"
    document: Dict[str, Any] = {
        "kind": value.kind,
        name_field: value.name,
        "original": _limit_to_json(value.original),
        "ours": _limit_to_json(value.ours),
        "pending": None if value.pending is None else {"value": _limit_to_json(value.pending.value)},
        "policy": value.policy,
        "recorded_at": value.recorded_at,
    }
    if value.cgroup_id is not None:
        document["cgroup_id"] = value.cgroup_id
    return document


def widest_form(value: OwnedValue) -> OwnedValue:
    """The entry as large as later updates of its values could make it."""
    widest_value = MAX_LIMIT_BYTES if value.kind == KIND_MEMORY_HIGH else MAX_SYSCTL_VALUE
    return replace(value, ours=widest_value, pending=PendingWrite(widest_value))


def encode_entries(entries: Dict[StoreKey, OwnedValue]) -> bytes:
    document = {
        "schema_version": SCHEMA_VERSION,
        "entries": [_owned_to_json(entries[k]) for k in sorted(entries)],
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")


def validate_key(kind: str, name: str) -> StoreKey:
    """The canonical key for an ownable value, or ValueError for anything we never own."""
    if kind == KIND_MEMORY_HIGH:
        canonical = normalize_cgroup(name)
        if canonical == "":
            raise ValueError("the root cgroup has no memory.high")
        return (kind, canonical)
    if kind == KIND_SYSCTL:
        if name not in OWNABLE_SYSCTLS:
            raise ValueError(f"sysctl {name!r} is not one remediator owns")
        return (kind, name)
    raise ValueError(f"unknown kind of owned value {kind!r}")
