"""Audit records: one per decision or action, with a fixed MESSAGE_ID per type.

Records are plain values. The journal writer turns them into journald fields
(``REMEDIATOR_*``) or one escaped stderr line; nothing here does I/O. The
MESSAGE_IDs are part of the product's interface (documented in the README and
in the journal catalog): never change one.

A record holds what happened in the enforcing wording ("set memory.high of ...",
result ``applied``) plus ``dry_run``; ``presented`` turns it into what a reader
sees (dry-run: "would set ...", result ``would``) at the one place every writer
calls, so no part of the daemon words dry-run itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional, Union

from remediator.readings import CgroupSnapshot, NodeSnapshot

# syslog priorities, as journald's PRIORITY field wants them.
PRIORITY_ERR = 3
PRIORITY_WARNING = 4
PRIORITY_NOTICE = 5
PRIORITY_INFO = 6
PRIORITY_DEBUG = 7


class Knob(str, enum.Enum):
    """The kernel values remediator changes: one module each under ``remediator.knobs``.
    Its value is REMEDIATOR_ACTION on every record about it, restores and recoveries included."""

    RECLAIM = "reclaim"
    MEMORY_HIGH = "memory_high"
    VFS_CACHE_PRESSURE = "vfs_cache_pressure"
    DROP_CACHES = "drop_caches"

    def __str__(self) -> str:
        return self.value


class Result(str, enum.Enum):
    """REMEDIATOR_RESULT of an action record (and of a restore or a recovery)."""

    APPLIED = "applied"  # written (dry-run: would be)
    PARTIAL = "partial"  # reclaim took less than asked, or ran out of time
    DECLINED = "declined"  # not done, with the reason in the message
    FAILED = "failed"  # the kernel said no (REMEDIATOR_ERRNO)
    REFUSED = "refused"  # stopped before the kernel: confinement, or an original that cannot be recorded
    STOOD_BACK = "stood_back"  # another writer changed the value: released, never restored
    RESTORED = "restored"  # our original is back (calm, back-off, exit, reload)
    RECOVERED = "recovered"  # an original left by a previous run is back (start-up)
    NOT_RESTORED = "not_restored"  # the value is not ours any more: left as it is
    GONE = "gone"  # the cgroup disappeared
    WOULD = "would"  # only as presented: the dry-run form of applied, partial, restored, recovered

    def __str__(self) -> str:
        return self.value


# The results that mean the write (or restore) took place; in dry-run it did not, and is presented "would".
WRITTEN_RESULTS = frozenset({Result.APPLIED, Result.PARTIAL, Result.RESTORED, Result.RECOVERED})
# Extra fields that report work done in the kernel: a dry-run record never carries them.
WORK_FIELDS = frozenset({"RECLAIM_REQUESTED_BYTES", "RECLAIM_COMPLETED_BYTES", "WRITTEN_MONOTONIC_US"})
DRY_RUN_PREFIX = "would "


class RecordType(enum.Enum):
    """Each value is (MESSAGE_ID, default PRIORITY)."""

    DAEMON_STARTED = ("275eacdb5c0945c88ddb91a6b99e7a7b", PRIORITY_INFO)
    DAEMON_STOPPING = ("3e7827fd34e34bfc9748180b44ccb23c", PRIORITY_INFO)
    DAEMON_RELOADED = ("f967dc4d746b4d2b96e508d6c4c04e88", PRIORITY_INFO)
    POLICY_LOADED = ("96a9f73aff8442479ab78fe6f52df258", PRIORITY_INFO)
    POLICY_REJECTED = ("068bc504ce4543c582b3fdcc524ba28a", PRIORITY_ERR)
    WATCH_STARTED = ("a8cb60a0e78b4d73a5db1c686d9aa508", PRIORITY_DEBUG)
    WATCH_ENDED = ("760f8345d1804eb5b010410c7f9379c0", PRIORITY_DEBUG)
    FALLBACK_SAMPLING = ("6f2a9e151ba54cfb9baaff31cc2c116b", PRIORITY_WARNING)
    PRESSURE_CONFIRMED = ("66bb8b5887b94914b7821589ad9a6114", PRIORITY_NOTICE)
    ACTION_APPLIED = ("7c7191e7214b443bb078acbd0a13f832", PRIORITY_NOTICE)
    ACTION_DECLINED = ("6a91a0f485af4ed3b421a1ecb661b37f", PRIORITY_INFO)
    ACTION_FAILED = ("ab27b1c5dab5418abccebe124d155a68", PRIORITY_ERR)
    ESCALATED = ("4a55c02189874a4e931d0a36b0f74322", PRIORITY_NOTICE)
    STOOD_BACK = ("94cd41502fcc472d8348a4c6477e019d", PRIORITY_WARNING)
    BACKED_OFF = ("f04b0f76858d471a8dbce4bbf4faec2a", PRIORITY_WARNING)
    ROLLED_BACK = ("67fe14691bec4a869cba9e9bed40b846", PRIORITY_NOTICE)
    STATE_RECOVERED = ("13401f5e6ef1401c842a64600659816c", PRIORITY_WARNING)
    STATE_QUARANTINED = ("463d472e3df146d7a663ddb88ffa483e", PRIORITY_ERR)
    STATE_UNWRITABLE = ("1a656be3fb8d4a99b13f62e12f226e71", PRIORITY_ERR)
    INCIDENT_RECORDED = ("c87ae2acc61f4cfdba5ade37bbafb678", PRIORITY_NOTICE)
    INTERNAL_ERROR = ("d85aaaa88ba342b18399b87d8cab72ea", PRIORITY_ERR)
    # Not actions: the tree or a cgroup's files could not be read (nothing was decided on them), and
    # the metrics file could not be written (nothing the daemon does depends on it).
    OBSERVATION_FAILED = ("8490af337526467fa6840ce6978df280", PRIORITY_WARNING)
    METRICS_UNWRITABLE = ("761ec586ffac4eae948b1ce79124ba22", PRIORITY_WARNING)

    @property
    def message_id(self) -> str:
        return self.value[0]

    @property
    def priority(self) -> int:
        return self.value[1]


@dataclass(frozen=True)
class Record:
    """One audit record.

    ``cgroup`` is the cgroup's name relative to the cgroup root ("" is the
    root cgroup) or None for node-level and daemon-level records. String
    fields stay empty when they do not apply; the journal writer omits them.
    """

    type: RecordType
    message: str
    policy: str = ""
    cgroup: Optional[str] = None
    action: Optional[Knob] = None
    # A ``Result`` on action records; daemon records use their own words (started, loaded, ...).
    result: str = ""
    before: str = ""
    after: str = ""
    errno: str = ""
    dry_run: bool = False
    evidence: Mapping[str, str] = field(default_factory=dict)
    # Further REMEDIATOR_<KEY> fields (keys upper-case A-Z0-9_).
    extra: Mapping[str, str] = field(default_factory=dict)
    priority: Optional[int] = None  # overrides the type's default

    @property
    def effective_priority(self) -> int:
        return self.priority if self.priority is not None else self.type.priority


def _limit(value: Optional[int]) -> str:
    return "max" if value is None else str(value)


def evidence_from(
    snapshot: Union[CgroupSnapshot, NodeSnapshot], stall_delta_us: Optional[int] = None
) -> Mapping[str, str]:
    """The evidence a decision was taken on, as journal field suffixes -> strings.

    Keys become ``REMEDIATOR_<KEY>`` fields; they are documented in the README.
    """
    ev: dict[str, str] = {
        "SOME_AVG10": f"{snapshot.pressure.some.avg10:.2f}",
    }
    full = snapshot.pressure.full
    if full is not None:
        ev["FULL_AVG10"] = f"{full.avg10:.2f}"
    if stall_delta_us is not None:
        ev["STALL_DELTA_US"] = str(stall_delta_us)
    if isinstance(snapshot, CgroupSnapshot):
        stat = snapshot.stat
        ev.update(
            {
                "MEMORY_CURRENT": str(snapshot.current_bytes),
                "MEMORY_MAX": _limit(snapshot.max_bytes),
                "MEMORY_HIGH": _limit(snapshot.high_bytes),
                "ANON": str(stat.get("anon")),
                "FILE": str(stat.get("file")),
                "SHMEM": str(stat.get("shmem")),
                "FILE_MAPPED": str(stat.get("file_mapped")),
                "FILE_DIRTY": str(stat.get("file_dirty")),
                "FILE_WRITEBACK": str(stat.get("file_writeback")),
                "SLAB": str(stat.get("slab")),
                "KERNEL_STACK": str(stat.get("kernel_stack")),
                "SOCK": str(stat.get("sock")),
                "EVENTS_LOW": str(snapshot.events.low),
                "EVENTS_HIGH": str(snapshot.events.high),
                "EVENTS_MAX": str(snapshot.events.max),
                "EVENTS_OOM": str(snapshot.events.oom),
                "EVENTS_OOM_KILL": str(snapshot.events.oom_kill),
            }
        )
    else:
        ev.update(
            {
                "MEM_TOTAL": str(snapshot.mem_total_bytes),
                "MEM_AVAILABLE": str(snapshot.mem_available_bytes),
                "SWAP_TOTAL": str(snapshot.swap_total_bytes),
                "SLAB_RECLAIMABLE": str(snapshot.slab_reclaimable_bytes),
            }
        )
        if snapshot.vfs_cache_pressure is not None:
            ev["VFS_CACHE_PRESSURE"] = str(snapshot.vfs_cache_pressure)
    return ev


def presented(record: Record) -> Record:
    """The record as a reader sees it: in dry-run a write that "took place" is worded
    "would ..." with result ``would``, and figures of work that was not done are left out."""
    if not record.dry_run:
        return record
    message = record.message
    result = record.result
    if result in WRITTEN_RESULTS:
        result = Result.WOULD.value
        # A release after another writer took a value over writes nothing in either mode.
        if record.type is not RecordType.STOOD_BACK and not message.startswith(DRY_RUN_PREFIX):
            message = DRY_RUN_PREFIX + message
    extra = {k: v for k, v in record.extra.items() if k not in WORK_FIELDS}
    return replace(record, message=message, result=str(result), extra=extra)
