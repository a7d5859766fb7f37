"""What this kernel and this mount layout let remediator do, found by looking.

The probe only reads, apart from arming (and at once dropping) two PSI
triggers on the node's ``pressure/memory``, which writes no setting: a
trigger lives only as long as its fd. They are armed only when the proc root
really is a procfs mount, so a copied or fake tree is never written to.

Two windows are tried because the answer depends on privilege, not only on
the kernel: since 6.5 a writer without CAP_SYS_RESOURCE may arm triggers
only with windows that are multiples of 2 s and gets EINVAL otherwise
(measured on the dev host, root in a sandbox without CAP_SYS_RESOURCE: a 1 s
window refused with EINVAL, a 2 s window accepted).

Layouts (kernel-facts.md, "cgroup v1"): remediator supports cgroup v2 only.
With the memory controller bound to a v1 hierarchy (a "hybrid" layout when
cgroup2 is mounted too) no cgroup has memory.high or memory.reclaim, and only
node-level pressure can be watched; the probe says so in plain words.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from remediator.errors import KernelError, KernelParseError
from remediator.kernel.cgroup_tree import walk_cgroups
from remediator.kernel.file_io import read_text
from remediator.kernel.psi import NODE_PRESSURE_FILE, read_node_pressure
from remediator.kernel.psi_trigger import PsiTrigger, TriggerCheck, check_trigger
from remediator.kernel.roots import KernelRoots

MOUNTS_FILE = "self/mounts"
STATUS_FILE = "self/status"
OSRELEASE_FILE = "sys/kernel/osrelease"
CONTROLLERS_FILE = "cgroup.controllers"
SUBTREE_CONTROL_FILE = "cgroup.subtree_control"
RECLAIM_FILE = "memory.reclaim"

# A 2 s window: accepted from privileged writers on every PSI kernel and, since
# 6.5, from unprivileged ones too, so its refusal means "no triggers at all".
PROBE_TRIGGER = PsiTrigger(kind="some", stall_us=100_000, window_us=2_000_000)
# A 1 s window: since 6.5 only writers with CAP_SYS_RESOURCE may arm it.
PROBE_SHORT_WINDOW_TRIGGER = PsiTrigger(kind="some", stall_us=150_000, window_us=1_000_000)
# Unprivileged triggers (6.5+) must use windows that are multiples of this.
UNPRIVILEGED_WINDOW_MULTIPLE_US = 2_000_000

MEMORY_RECLAIM_SINCE = (5, 19)
CAP_SYS_RESOURCE = 24  # bit number in CapEff (linux/capability.h)

LAYOUT_UNIFIED = "unified"  # cgroup2 mounted, memory controller not bound to v1
LAYOUT_HYBRID = "hybrid"  # cgroup2 mounted, memory controller bound to v1
LAYOUT_LEGACY = "legacy"  # no cgroup2, memory controller on v1
LAYOUT_NONE = "none"  # neither cgroup2 nor a v1 memory hierarchy is mounted

TriggerChecker = Callable[[Path, PsiTrigger], TriggerCheck]


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mounts`` (escapes in the paths decoded)."""

    source: str
    mount_point: str
    fstype: str
    options: Tuple[str, ...]


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape_mount_field(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \ooo.
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mounts(text: str, source: str = "") -> Tuple[Mount, ...]:
    """Parse ``/proc/self/mounts`` (fstab format). Raises only ``KernelParseError``."""
    mounts: List[Mount] = []
    for raw in text.splitlines():
        fields = raw.split()
        if not fields:
            continue
        if len(fields) < 4:
            raise KernelParseError(
                source, f"expected 'source mountpoint fstype options ...', got {raw.strip()!r}"
            )
        mounts.append(
            Mount(
                source=_unescape_mount_field(fields[0]),
                mount_point=_unescape_mount_field(fields[1]),
                fstype=fields[2],
                options=tuple(fields[3].split(",")),
            )
        )
    return tuple(mounts)


def parse_kernel_version(release: str) -> Optional[Tuple[int, int]]:
    """(major, minor) from a release string such as ``6.1.0-18-amd64``; None if unrecognisable."""
    # Bounded: int() of thousands of digits raises ValueError instead of answering None.
    match = re.match(r"([0-9]{1,9})\.([0-9]{1,9})(?![0-9])", release.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_cap_sys_resource(status_text: str) -> Optional[bool]:
    """Whether ``CapEff`` in ``/proc/self/status`` holds CAP_SYS_RESOURCE; None without a usable CapEff."""
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            try:
                return bool(int(value.strip(), 16) >> CAP_SYS_RESOURCE & 1)
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class Capabilities:
    cgroup_root: Path
    proc_root: Path
    kernel_release: str  # "" when unknown
    kernel_version: Optional[Tuple[int, int]]
    # Error texts are empty when nothing went wrong reading.
    mounts_error: str
    cgroup2_mount_points: Tuple[str, ...]
    memory_v1_mount_points: Tuple[str, ...]
    cgroup_root_is_cgroup2: bool
    root_controllers: Tuple[str, ...]
    root_subtree_control: Tuple[str, ...]
    psi_present: bool
    psi_error: str
    # None: not known (no cgroup2 memory tree, or no memory-enabled child cgroup to look in).
    memory_reclaim_present: Optional[bool]
    # Arming PROBE_TRIGGER (2 s window) and PROBE_SHORT_WINDOW_TRIGGER (1 s).
    # None: not probed (PSI missing, or the proc root is not a procfs mount).
    trigger: Optional[TriggerCheck]
    short_window_trigger: Optional[TriggerCheck]
    trigger_not_probed_reason: str
    # From CapEff in self/status; None when unreadable. Explains short-window refusals.
    cap_sys_resource: Optional[bool]
    # The cgroup root is no mount at all but holds a cgroup v2 tree: a copy (a bug
    # report's tarball, a fixture) replayed with --cgroup-root. Read as it is.
    cgroup_root_is_copy: bool = False

    @property
    def cgroup_root_is_v2_tree(self) -> bool:
        return self.cgroup_root_is_cgroup2 or self.cgroup_root_is_copy

    @property
    def memory_bound_to_v1(self) -> bool:
        return bool(self.memory_v1_mount_points)

    @property
    def memory_controller_v2(self) -> bool:
        """The configured cgroup root is cgroup2 and offers the memory controller."""
        return self.cgroup_root_is_v2_tree and "memory" in self.root_controllers

    @property
    def layout(self) -> str:
        if self.cgroup2_mount_points:
            return LAYOUT_HYBRID if self.memory_bound_to_v1 else LAYOUT_UNIFIED
        return LAYOUT_LEGACY if self.memory_bound_to_v1 else LAYOUT_NONE

    @property
    def can_remediate_cgroups(self) -> bool:
        """memory.high/memory.reclaim can exist in cgroups under the configured root."""
        return self.memory_controller_v2 and "memory" in self.root_subtree_control

    @property
    def memory_reclaim(self) -> bool:
        """Whether memory.reclaim can be written in memory-enabled cgroups.

        Seen in a child cgroup when there was one; otherwise inferred from the
        kernel version (memory.reclaim appeared in 5.19).
        """
        if self.memory_reclaim_present is not None:
            return self.memory_reclaim_present
        return (
            self.memory_controller_v2
            and self.kernel_version is not None
            and self.kernel_version >= MEMORY_RECLAIM_SINCE
        )

    @property
    def triggers_accepted(self) -> Optional[bool]:
        """Whether some PSI trigger can be armed on the node's pressure file (None: not probed)."""
        if self.trigger is None or self.short_window_trigger is None:
            return None
        return self.trigger.accepted or self.short_window_trigger.accepted

    @property
    def triggers_may_be_armed(self) -> bool:
        """Whether the watcher may write trigger strings at all.

        Only into the kernel's own files: a cgroup root that is a cgroup2 mount
        and a proc root whose probe ran (a procfs mount). On a copied tree (a
        bug report replayed with --cgroup-root) the same write would put
        ``full 100000 2000000`` into someone's files, so copies are sampled.
        """
        return self.cgroup_root_is_cgroup2 and self.trigger is not None and self.trigger.accepted

    @property
    def watch_mode(self) -> str:
        """``triggers`` (the kernel wakes us, for the windows it accepts), ``sampling``
        (we read avg10/total on a timer) or ``none`` (no PSI at all)."""
        if not self.psi_present:
            return "none"
        return "triggers" if self.triggers_accepted else "sampling"

    def summary_lines(self) -> List[str]:
        """What works and what does not, in plain words: one finding per line, each a
        sentence (callers may join them with spaces into a paragraph)."""
        lines = [
            f"Kernel {self.kernel_release}." if self.kernel_release else "The kernel release is unknown."
        ]
        if self.mounts_error:
            lines.append(
                f"The mount table could not be read ({self.mounts_error}); the cgroup layout is unknown."
            )
        lines.extend(self._layout_lines())
        lines.extend(self._psi_lines())
        return lines

    def explanation(self) -> str:
        return " ".join(self.summary_lines())

    def as_json(self) -> Dict[str, Any]:
        """A JSON-ready view for ``status --json`` and bug reports (findings and derived answers)."""

        def trigger_json(check: Optional[TriggerCheck]) -> Optional[Dict[str, Any]]:
            if check is None:
                return None
            return {"accepted": check.accepted, "errno": check.errno_name or None, "reason": check.reason}

        return {
            "cgroup_root": str(self.cgroup_root),
            "proc_root": str(self.proc_root),
            "kernel_release": self.kernel_release,
            "layout": self.layout,
            "cgroup2_mount_points": list(self.cgroup2_mount_points),
            "memory_v1_mount_points": list(self.memory_v1_mount_points),
            "cgroup_root_is_cgroup2": self.cgroup_root_is_cgroup2,
            "cgroup_root_is_copy": self.cgroup_root_is_copy,
            "root_controllers": list(self.root_controllers),
            "root_subtree_control": list(self.root_subtree_control),
            "memory_controller_v2": self.memory_controller_v2,
            "can_remediate_cgroups": self.can_remediate_cgroups,
            "memory_reclaim": self.memory_reclaim,
            "psi_present": self.psi_present,
            "psi_error": self.psi_error,
            "watch_mode": self.watch_mode,
            "trigger_2s_window": trigger_json(self.trigger),
            "trigger_1s_window": trigger_json(self.short_window_trigger),
            "trigger_not_probed_reason": self.trigger_not_probed_reason,
            "cap_sys_resource": self.cap_sys_resource,
            "mounts_error": self.mounts_error,
            "summary": self.summary_lines(),
        }

    def _layout_lines(self) -> List[str]:
        v2_at = ", ".join(self.cgroup2_mount_points)
        v1_at = ", ".join(self.memory_v1_mount_points)
        lines: List[str] = []
        layout = self.layout
        if self.cgroup_root_is_copy:
            lines.append(
                f"The cgroup root {self.cgroup_root} is not a mount but holds a cgroup v2 tree "
                "(a copied tree): its files are read as they are."
            )
            lines.extend(self._unified_memory_lines())
            return lines
        if layout == LAYOUT_HYBRID:
            lines.append(
                f"Cgroup v2 is mounted at {v2_at} but the memory controller is bound to cgroup v1 "
                f"(at {v1_at}, hybrid layout): memory.high, memory.reclaim, memory.stat and memory.events "
                "do not exist on the v2 tree, so no cgroup can be remediated; only node-level pressure "
                "can be watched."
            )
        elif layout == LAYOUT_LEGACY:
            lines.append(
                f"Cgroup v2 is not mounted and the memory controller is on cgroup v1 (at {v1_at}): "
                "remediator supports cgroup v2 only, so only node-level pressure can be watched."
            )
        elif layout == LAYOUT_NONE and not self.mounts_error:
            lines.append(
                "Neither cgroup v2 nor a cgroup v1 memory hierarchy is mounted: "
                "only node-level pressure can be watched."
            )
        if self.cgroup2_mount_points and not self.cgroup_root_is_cgroup2:
            lines.append(
                f"The cgroup root {self.cgroup_root} is not a cgroup2 mount (cgroup2 is at {v2_at}); "
                "no cgroup under it can be watched or remediated."
            )
        if layout == LAYOUT_UNIFIED and self.cgroup_root_is_cgroup2:
            lines.extend(self._unified_memory_lines())
        return lines

    def _unified_memory_lines(self) -> List[str]:
        if not self.memory_controller_v2:
            controllers = " ".join(self.root_controllers) or "none"
            return [
                f"Cgroup v2 is mounted at {self.cgroup_root} but offers no memory controller "
                f"(cgroup.controllers: {controllers}): no cgroup can be remediated; only node-level "
                "pressure can be watched."
            ]
        if not self.can_remediate_cgroups:
            return [
                f"Cgroup v2 is mounted at {self.cgroup_root} with the memory controller, but it is not "
                "enabled for child cgroups (cgroup.subtree_control): no cgroup has memory.high or "
                "memory.reclaim."
            ]
        lines = [
            f"Cgroup v2 is mounted at {self.cgroup_root} with the memory controller: per-cgroup "
            "memory.pressure and memory.high can be used."
        ]
        if self.memory_reclaim_present is True:
            lines.append("The memory.reclaim file is present: page cache can be reclaimed per cgroup.")
        elif self.memory_reclaim_present is False:
            lines.append(
                "The memory.reclaim file is missing (kernel before 5.19?): the reclaim rung is unavailable."
            )
        else:
            lines.append("No memory-enabled child cgroup exists yet to look for memory.reclaim in.")
        return lines

    def _psi_lines(self) -> List[str]:
        pressure_file = self.proc_root / NODE_PRESSURE_FILE
        if not self.psi_present:
            return [
                f"PSI is not available ({self.psi_error}): no pressure can be watched "
                "(kernel built without CONFIG_PSI, or booted with psi=0)."
            ]
        lines = [f"Node pressure can be read from {pressure_file}."]
        trigger, short = self.trigger, self.short_window_trigger
        if trigger is None or short is None:
            lines.append(f"PSI triggers were not probed ({self.trigger_not_probed_reason}).")
        elif trigger.accepted and short.accepted:
            lines.append(
                f"PSI triggers are accepted on {pressure_file} (any window): "
                "the kernel will wake us on pressure."
            )
        elif trigger.accepted:
            lines.append(
                f"PSI triggers are accepted on {pressure_file} only with windows that are multiples of 2 s "
                f"(a 1 s window was refused: {short.errno_name or short.reason}){self._privilege_note()}; "
                "policies with other windows will be sampled on a timer (avg10/total)."
            )
        elif short.accepted:
            lines.append(
                f"PSI triggers are accepted on {pressure_file} with a 1 s window but a 2 s window "
                f"was refused ({trigger.reason}); policies whose windows are refused will be sampled "
                "on a timer."
            )
        else:
            lines.append(
                f"PSI triggers are refused ({trigger.reason}): pressure will be sampled on a timer "
                "(avg10/total) instead of waiting for kernel events."
            )
        return lines

    def _privilege_note(self) -> str:
        if self.cap_sys_resource is False:
            return (
                "; this process lacks CAP_SYS_RESOURCE, and since kernel 6.5 unprivileged triggers "
                "must use windows that are multiples of 2 s"
            )
        return ""


def _same_path(mount_point: str, configured: Path) -> bool:
    wanted = {os.path.normpath(str(configured)), os.path.realpath(configured)}
    return os.path.normpath(mount_point) in wanted


def _read_words(path: Path) -> Tuple[str, ...]:
    try:
        return tuple(read_text(path).split())
    except KernelError:
        return ()


def _memory_reclaim_present(roots: KernelRoots) -> Optional[bool]:
    # Look in the first memory-enabled child: the root cgroup has memory.reclaim on 6.1 but not on
    # every kernel, while every child with the memory controller has it where the kernel supports it.
    try:
        for cgroup in walk_cgroups(roots, memory_only=True):
            return os.path.exists(roots.cgroup_file(cgroup, RECLAIM_FILE))
    except KernelError:
        return None
    return None


def _read_mounts(roots: KernelRoots) -> Tuple[Tuple[Mount, ...], str]:
    path = roots.proc_file(MOUNTS_FILE)
    try:
        return parse_mounts(read_text(path), str(path)), ""
    except (KernelError, KernelParseError) as exc:
        return (), str(exc)


def _read_kernel_release(roots: KernelRoots) -> str:
    try:
        return read_text(roots.proc_file(OSRELEASE_FILE)).strip()
    except KernelError:
        return ""


def _read_cap_sys_resource(roots: KernelRoots) -> Optional[bool]:
    try:
        return parse_cap_sys_resource(read_text(roots.proc_file(STATUS_FILE)))
    except KernelError:
        return None


def probe(roots: KernelRoots, trigger_checker: Optional[TriggerChecker] = None) -> Capabilities:
    """Find out what works here. Never raises a KernelError: what cannot be read is reported.

    ``trigger_checker`` replaces the real arm-and-close (for tests); without it
    triggers are armed only if the proc root is a procfs mount.
    """
    mounts, mounts_error = _read_mounts(roots)
    cgroup2_mounts = tuple(m.mount_point for m in mounts if m.fstype == "cgroup2")
    memory_v1_mounts = tuple(m.mount_point for m in mounts if m.fstype == "cgroup" and "memory" in m.options)
    root_is_cgroup2 = any(_same_path(point, roots.cgroup_root) for point in cgroup2_mounts)
    proc_is_procfs = any(m.fstype == "proc" and _same_path(m.mount_point, roots.proc_root) for m in mounts)

    root_is_mount = any(_same_path(m.mount_point, roots.cgroup_root) for m in mounts)
    root_is_copy = (
        not root_is_cgroup2
        and not root_is_mount
        and not mounts_error
        and os.path.isfile(roots.cgroup_file("", CONTROLLERS_FILE))
    )
    root_controllers: Tuple[str, ...] = ()
    root_subtree_control: Tuple[str, ...] = ()
    if root_is_cgroup2 or root_is_copy:
        root_controllers = _read_words(roots.cgroup_file("", CONTROLLERS_FILE))
        root_subtree_control = _read_words(roots.cgroup_file("", SUBTREE_CONTROL_FILE))
    memory_reclaim = _memory_reclaim_present(roots) if "memory" in root_controllers else None

    try:
        read_node_pressure(roots)
        psi_present, psi_error = True, ""
    except (KernelError, KernelParseError) as exc:
        psi_present, psi_error = False, str(exc)

    trigger: Optional[TriggerCheck] = None
    short_window_trigger: Optional[TriggerCheck] = None
    not_probed_reason = ""
    if not psi_present:
        not_probed_reason = "PSI is not available"
    elif trigger_checker is None and not proc_is_procfs:
        not_probed_reason = f"{roots.proc_root} is not a procfs mount; nothing was armed"
    else:
        checker = trigger_checker or check_trigger
        pressure_path = roots.proc_file(NODE_PRESSURE_FILE)
        trigger = checker(pressure_path, PROBE_TRIGGER)
        short_window_trigger = checker(pressure_path, PROBE_SHORT_WINDOW_TRIGGER)

    release = _read_kernel_release(roots)
    return Capabilities(
        cgroup_root=roots.cgroup_root,
        proc_root=roots.proc_root,
        kernel_release=release,
        kernel_version=parse_kernel_version(release) if release else None,
        mounts_error=mounts_error,
        cgroup2_mount_points=cgroup2_mounts,
        memory_v1_mount_points=memory_v1_mounts,
        cgroup_root_is_cgroup2=root_is_cgroup2,
        root_controllers=root_controllers,
        root_subtree_control=root_subtree_control,
        psi_present=psi_present,
        psi_error=psi_error,
        memory_reclaim_present=memory_reclaim,
        trigger=trigger,
        short_window_trigger=short_window_trigger,
        trigger_not_probed_reason=not_probed_reason,
        cap_sys_resource=_read_cap_sys_resource(roots),
        cgroup_root_is_copy=root_is_copy,
    )
