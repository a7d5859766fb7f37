"""``remediator check``: validate settings and every policy, then show what
each valid policy selects on this machine right now (oomd's --check-config).

Exit 0 when everything is valid, 1 with every error listed (file:line:col: key: message).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, TextIO

from remediator.kernel.capabilities import probe
from remediator.kernel.roots import KernelRoots
from remediator.policy.compiled import (
    CgroupSelector,
    DropCachesAction,
    MemoryHighAction,
    Policy,
    ReclaimAction,
    VfsCachePressureAction,
)
from remediator.policy.loader import load_policy_dir
from remediator.settings import Settings
from remediator.sizes import format_bytes

MAX_LISTED = 20


def describe_rung(action: object) -> str:
    if isinstance(action, ReclaimAction):
        cap = f", at most {format_bytes(action.max_bytes)}" if action.max_bytes else ""
        follow = action.follow_up
        follow_up = (
            f" (then again at {follow.min_usage_fraction_of_max:g} x memory.max, looking every "
            f"{follow.every_sec:g} s for {follow.for_sec:g} s)"
            if follow is not None
            else ""
        )
        return f"reclaim {action.fraction:g} of the reclaimable cache{cap}{follow_up}"
    if isinstance(action, MemoryHighAction):
        return f"memory_high {action.fraction:g} x memory.{action.relative_to}"
    if isinstance(action, VfsCachePressureAction):
        return f"vfs_cache_pressure {action.value}"
    if isinstance(action, DropCachesAction):
        return f"drop_caches {action.mode}"
    return repr(action)


def describe_policy(policy: Policy) -> str:
    t = policy.trigger
    ladder = " -> ".join(describe_rung(a) for a in policy.ladder)
    sustained = f" sustained {t.sustained_sec:g} s" if t.sustained_sec else ""
    return (
        f"{t.kind} stall {t.stall_us // 1000} ms per {t.window_us // 1000} ms{sustained}; "
        f"ladder: {ladder}; verify {policy.verify_sec:g} s; undo after {policy.rollback.calm_sec:g} s calm"
    )


def run_check(settings: Settings, config_file: Optional[Path], out: TextIO, err: TextIO) -> int:
    from remediator.daemon.discovery import selection_by_policy

    roots = KernelRoots(settings.cgroup_root, settings.proc_root)
    out.write(
        f"settings: {'file ' + str(config_file) if config_file else 'defaults (no settings file)'}; "
        f"mode: {'dry-run (audit)' if settings.dry_run else 'enforcing'}\n"
    )
    allow_untrusted = settings.insecure_allow_untrusted_files
    if allow_untrusted:
        # As `run` would load them: checking with stricter rules than the daemon applies would lie.
        err.write(
            "remediator: warning: insecure_allow_untrusted_files is set: the ownership and mode of "
            "the settings and policy files are not checked\n"
        )
    policy_set = load_policy_dir(settings.policies_dir, allow_untrusted=allow_untrusted)
    for issue in policy_set.issues:
        err.write(f"{issue}\n")
    caps = probe(roots)
    valid: Sequence[Policy] = policy_set.policies
    selection = selection_by_policy(roots, valid) if caps.memory_controller_v2 else {}
    for policy in valid:
        state = "" if policy.enabled else " (disabled)"
        out.write(f"policy {policy.name}{state} [{policy.source}]: {describe_policy(policy)}\n")
        if not isinstance(policy.target, CgroupSelector):
            out.write("  selects: the node (/proc/pressure/memory)\n")
            continue
        if not caps.memory_controller_v2:
            out.write("  selects: nothing on this machine (no cgroup v2 memory controller, see below)\n")
            continue
        chosen: List[str] = list(selection.get(policy.name, ()))
        out.write(f"  selects: {len(chosen)} cgroup{'s' if len(chosen) != 1 else ''} now\n")
        for name in chosen[:MAX_LISTED]:
            out.write(f"    {name}\n")
        if len(chosen) > MAX_LISTED:
            out.write(f"    ... and {len(chosen) - MAX_LISTED} more\n")
    if not caps.memory_controller_v2:
        out.write("\n" + " ".join(caps.summary_lines()) + "\n")
    n_files = len(policy_set.files)
    if policy_set.issues:
        err.write(f"{len(policy_set.issues)} error(s) in {settings.policies_dir}\n")
        return 1
    out.write(f"ok: {len(valid)} polic{'ies' if len(valid) != 1 else 'y'} valid in {n_files} file(s)\n")
    return 0
