"""Walking the cgroup tree.

Cgroups come and go while we walk (containers, transient units): a directory
that vanishes between listing and descending is skipped, not an error.
Symlinks are never followed (cgroupfs has none; a copied or fake tree might,
and following one could leave the root or loop).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterator, List, Tuple

from remediator.errors import kernel_error_from_oserror
from remediator.kernel.memory_limits import CURRENT_FILE
from remediator.kernel.roots import InvalidCgroupName, KernelRoots, normalize_cgroup

# A directory that disappeared under us, or a name that stopped being a directory.
_VANISHED = {errno.ENOENT, errno.ENOTDIR, errno.ENODEV}


def _child_names(roots: KernelRoots, cgroup: str) -> List[str]:
    directory = roots.cgroup_dir(cgroup)
    try:
        with os.scandir(directory) as entries:
            names = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError as exc:
        if exc.errno in _VANISHED:
            return []
        raise kernel_error_from_oserror(exc, directory, directory) from exc
    names.sort()
    children = [f"{cgroup}/{name}" if cgroup else name for name in names]
    # A directory name with a newline is legal to mkdir (a delegated subtree's
    # owner can create one) but cannot be named safely anywhere else:
    # normalize_cgroup refuses it. Skip it here so one hostile name cannot make
    # every walk (and the daemon's rescan) fail.
    return [child for child in children if _nameable(child)]


def _nameable(cgroup: str) -> bool:
    try:
        normalize_cgroup(cgroup)
    except InvalidCgroupName:
        return False
    return True


def _has_memory_controller(roots: KernelRoots, cgroup: str) -> bool:
    # memory.current exists exactly in the non-root cgroups whose parent enables
    # the memory controller for its children.
    return os.path.isfile(roots.cgroup_file(cgroup, CURRENT_FILE))


def walk_cgroups(roots: KernelRoots, memory_only: bool = True) -> Iterator[str]:
    """Yield cgroup names relative to the root ("" is the root), depth-first, sorted.

    With ``memory_only``, only cgroups with the memory controller are yielded.
    The root is not one of them (it has no memory.current), but its children
    are still visited; below any other cgroup without the controller nothing
    can have it (controllers are enabled top-down), so that subtree is skipped.
    Raises a ``KernelError`` only for errors other than a vanished directory
    (e.g. a permission denied on listing).
    """
    # (name, is_root) pairs; children are pushed reversed so they pop in sorted order.
    stack: List[Tuple[str, bool]] = [("", True)]
    while stack:
        cgroup, is_root = stack.pop()
        if memory_only and not is_root:
            if not _has_memory_controller(roots, cgroup):
                continue
            yield cgroup
        elif not memory_only:
            yield cgroup
        stack.extend((child, False) for child in reversed(_child_names(roots, cgroup)))


def cgroup_exists(roots: KernelRoots, cgroup: str) -> bool:
    """Whether the cgroup's directory exists (a symlink does not count)."""
    directory = roots.cgroup_dir(cgroup)
    try:
        return stat.S_ISDIR(os.lstat(directory).st_mode)
    except OSError:
        return False
