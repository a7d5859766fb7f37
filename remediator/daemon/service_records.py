"""The records the service itself words (policies, watching, reloads); the core and the executor word theirs.

Plain functions from what happened to a ``Record``: no I/O, no state. The
service emits them through its one ``emit`` (dry-run marking, identity fields,
metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

from remediator.core.state import TargetKey
from remediator.daemon.watcher import WatchChange
from remediator.located.issues import PolicyIssue
from remediator.policy.loader import PolicySet
from remediator.records import PRIORITY_DEBUG, PRIORITY_ERR, PRIORITY_WARNING, Record, RecordType
from remediator.settings import Settings

# Settings a reload cannot apply: the kernel roots, the mode, and what the writer, the state store,
# the executor and the watcher were built with. Every other key is applied on reload (policies_dir,
# insecure_allow_untrusted_files, rescan_interval_sec, node_actions_max_per_hour, metrics_*,
# pods_log_dir, flight_recorder_minutes, incidents_max_*).
RESTART_ONLY = (
    "dry_run",
    "cgroup_root",
    "proc_root",
    "state_file",
    "data_dir",
    "log_target",
    "sampling_interval_sec",
    "write_retry_budget_sec",
)


def policy_records(policy_set: PolicySet) -> List[Record]:
    """One POLICY_REJECTED per issue, one POLICY_LOADED per valid policy."""
    out = [
        Record(
            RecordType.POLICY_REJECTED,
            f"policy rejected: {issue}",
            policy=Path(issue.file).stem,
            result="rejected",
        )
        for issue in policy_set.issues
    ]
    out.extend(
        Record(
            RecordType.POLICY_LOADED,
            f"policy {p.name} loaded from {p.source}" + ("" if p.enabled else " (disabled)"),
            policy=p.name,
            result="loaded",
        )
        for p in policy_set.policies
    )
    return out


def degraded_record(status: str, kept_in: Path, kept: PolicySet) -> Record:
    """The start found the policy directory invalid and runs the last valid set instead."""
    names = ", ".join(p.name for p in kept.policies)
    return Record(
        RecordType.POLICY_REJECTED,
        f"{status}; the policy directory is invalid, so the last valid set kept in {kept_in} runs "
        f"instead ({names}); fix the directory and reload",
        result="degraded",
        priority=PRIORITY_ERR,
        extra={"KEPT_POLICIES": str(kept_in)},
    )


def not_kept_record(exc: Exception) -> Record:
    """The valid set runs, but its copy could not be kept: the next start has no fallback."""
    return Record(
        RecordType.STATE_UNWRITABLE,
        f"the running policy set could not be kept as the last valid one ({exc}); a start with an "
        "invalid policy directory would then refuse to run",
        result="failed",
        priority=PRIORITY_WARNING,
    )


def rejected_on_reload(issue: PolicyIssue, settings: bool) -> Record:
    """A settings or policy problem that made a reload keep what runs."""
    if settings:
        return Record(
            RecordType.POLICY_REJECTED,
            f"settings rejected on reload, keeping the running ones: {issue}",
            result="rejected",
        )
    return Record(
        RecordType.POLICY_REJECTED,
        f"policy rejected on reload, keeping the running policies: {issue}",
        policy=Path(issue.file).stem,
        result="rejected",
    )


def restart_only_changes(running: Settings, new: Settings) -> Tuple[Settings, Sequence[Record]]:
    """``new`` with every restart-only key kept as it runs, and the record naming the keys refused."""
    changed = [key for key in RESTART_ONLY if getattr(new, key) != getattr(running, key)]
    if not changed:
        return new, ()
    record = Record(
        RecordType.POLICY_REJECTED,
        f"{', '.join(changed)} change only on restart; keeping the running "
        + ("value" if len(changed) == 1 else "values"),
        result="rejected",
        priority=PRIORITY_WARNING,
        extra={"SETTINGS": " ".join(changed)},
    )
    return new.model_copy(update={key: getattr(running, key) for key in changed}), (record,)


def watch_record(change: WatchChange, sampling_interval_sec: float, first_fallback: bool) -> Record:
    """WATCH_STARTED for an armed or sampled target; FALLBACK_SAMPLING when a trigger was refused."""
    key = change.key
    if change.kind == "fallback":
        return Record(
            RecordType.FALLBACK_SAMPLING,
            # Not always the kernel's refusal: a read-only mount (a sandbox) fails the same way.
            f"could not arm a PSI trigger on {change.path} ({change.reason}); "
            f"sampling pressure every {sampling_interval_sec:g} s instead",
            policy=key.policy,
            cgroup=key.cgroup,
            result="sampling",
            errno=change.errno_name,
            priority=None if first_fallback else PRIORITY_DEBUG,
        )
    return Record(
        RecordType.WATCH_STARTED,
        f"watching {change.path} ({change.kind})",
        policy=key.policy,
        cgroup=key.cgroup,
        result=change.kind,
    )


def watch_ended(key: TargetKey, why: str) -> Record:
    return Record(
        RecordType.WATCH_ENDED, f"stopped watching ({why})", policy=key.policy, cgroup=key.cgroup, result=why
    )


__all__ = [
    "RESTART_ONLY",
    "policy_records",
    "rejected_on_reload",
    "restart_only_changes",
    "watch_ended",
    "watch_record",
]
