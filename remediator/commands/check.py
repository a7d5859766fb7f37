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
from remediator.text import escape_name, plural

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
    from remediator.identity import IdentityResolver

    # Every line goes through escape_name: file names, cgroup names and the values an issue repeats
    # are anyone's choice, and a newline in one must not split (or forge) a line of this report.
    def say(stream: TextIO, line: str) -> None:
        stream.write(escape_name(line) + "\n")

    roots = KernelRoots(settings.cgroup_root, settings.proc_root)
    say(
        out,
        f"settings: {'file ' + str(config_file) if config_file else 'defaults (no settings file)'}; "
        f"mode: {'dry-run (audit)' if settings.dry_run else 'enforcing'}",
    )
    allow_untrusted = settings.insecure_allow_untrusted_files
    if allow_untrusted:
        # As `run` would load them: checking with stricter rules than the daemon applies would lie.
        say(
            err,
            "remediator: warning: insecure_allow_untrusted_files is set: the ownership and mode of "
            "the settings and policy files are not checked",
        )
    policy_set = load_policy_dir(settings.policies_dir, allow_untrusted=allow_untrusted)
    for issue in policy_set.issues:
        say(err, str(issue))
    caps = probe(roots)
    valid: Sequence[Policy] = policy_set.policies
    # As the daemon selects: target.kubernetes by each cgroup's identity, pod names from pods_log_dir.
    identify = IdentityResolver(pods_log_dir=settings.pods_log_dir).identify
    selection = selection_by_policy(roots, valid, identify=identify) if caps.memory_controller_v2 else {}
    for policy in valid:
        state = "" if policy.enabled else " (disabled)"
        say(out, f"policy {policy.name}{state} [{policy.source}]: {describe_policy(policy)}")
        if not isinstance(policy.target, CgroupSelector):
            say(out, "  selects: the node (/proc/pressure/memory)")
            continue
        if not caps.memory_controller_v2:
            say(out, "  selects: nothing on this machine (no cgroup v2 memory controller, see below)")
            continue
        chosen: List[str] = list(selection.get(policy.name, ()))
        say(out, f"  selects: {plural(len(chosen), 'cgroup')} now")
        for name in chosen[:MAX_LISTED]:
            say(out, f"    {name}")
        if len(chosen) > MAX_LISTED:
            say(out, f"    ... and {len(chosen) - MAX_LISTED} more")
    if not caps.memory_controller_v2:
        out.write("\n")
        say(out, " ".join(caps.summary_lines()))
    n_files = len(policy_set.files)
    if policy_set.issues:
        say(err, f"{plural(len(policy_set.issues), 'error')} in {settings.policies_dir}")
        return 1
    say(out, f"ok: {plural(len(valid), 'policy', 'policies')} valid in {plural(n_files, 'file')}")
    return 0
