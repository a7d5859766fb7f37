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

# On cgroupfs (kernfs), as on ext4, xfs and tmpfs, a directory's link count is
# 2 plus its number of subdirectories: exactly 2 means no child cgroups, so the
# walk does not list it. Most cgroups are leaves, and listing one reads ~70
# interface-file entries where the stat that says "leaf" is one syscall; the
# daemon walks the tree every rescan_interval_sec, so this is most of its idle
# cost at a thousand cgroups (bench/cost). Filesystems that do not count
# subdirectories (btrfs says 1) are listed as before.
_LEAF_LINK_COUNT = 2


def _may_have_children(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.stat(follow_symlinks=False).st_nlink != _LEAF_LINK_COUNT
    except OSError:
        return True  # vanished or unreadable: the listing will say


def _children(roots: KernelRoots, cgroup: str, directory: str) -> List[Tuple[str, str, bool]]:
    """(name, directory, may have children) of each child cgroup, sorted by name."""
    try:
        with os.scandir(directory) as entries:
            found = [
                (entry.name, _may_have_children(entry))
                for entry in entries
                if entry.is_dir(follow_symlinks=False)
            ]
    except OSError as exc:
        if exc.errno in _VANISHED:
            return []
        path = roots.cgroup_dir(cgroup)
        raise kernel_error_from_oserror(exc, path, path) from exc
    found.sort()
    # A directory name with a newline is legal to mkdir (a delegated subtree's
    # owner can create one) but cannot be named safely anywhere else:
    # normalize_cgroup refuses it. Skip it here so one hostile name cannot make
    # every walk (and the daemon's rescan) fail.
    return [
        (f"{cgroup}/{name}" if cgroup else name, os.path.join(directory, name), may_have_children)
        for name, may_have_children in found
        if _nameable(f"{cgroup}/{name}" if cgroup else name)
    ]


def _nameable(cgroup: str) -> bool:
    try:
        normalize_cgroup(cgroup)
    except InvalidCgroupName:
        return False
    return True


def _has_memory_controller(directory: str) -> bool:
    # memory.current exists exactly in the non-root cgroups whose parent enables
    # the memory controller for its children.
    return os.path.isfile(os.path.join(directory, CURRENT_FILE))


def walk_cgroups(roots: KernelRoots, memory_only: bool = True) -> Iterator[str]:
    """Yield cgroup names relative to the root ("" is the root), depth-first, sorted.

    With ``memory_only``, only cgroups with the memory controller are yielded.
    The root is not one of them (it has no memory.current), but its children
    are still visited; below any other cgroup without the controller nothing
    can have it (controllers are enabled top-down), so that subtree is skipped.
    Raises a ``KernelError`` only for errors other than a vanished directory
    (e.g. a permission denied on listing).
    """
    # (name, directory, may have children, is_root); children are pushed reversed so
    # they pop in sorted order. Paths are plain strings built from the listing itself
    # (names that came out of scandir cannot escape the root): pathlib per cgroup
    # cost more than the syscalls.
    stack: List[Tuple[str, str, bool, bool]] = [("", str(roots.cgroup_dir("")), True, True)]
    while stack:
        cgroup, directory, may_have_children, is_root = stack.pop()
        if memory_only and not is_root:
            if not _has_memory_controller(directory):
                continue
            yield cgroup
        elif not memory_only:
            yield cgroup
        if may_have_children:
            children = _children(roots, cgroup, directory)
            stack.extend((name, path, more, False) for name, path, more in reversed(children))


def cgroup_exists(roots: KernelRoots, cgroup: str) -> bool:
    """Whether the cgroup's directory exists (a symlink does not count)."""
    directory = roots.cgroup_dir(cgroup)
    try:
        return stat.S_ISDIR(os.lstat(directory).st_mode)
    except OSError:
        return False
