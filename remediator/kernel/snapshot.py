"""One read of everything the decision core looks at, for a cgroup or the node.

Each interface file is read exactly once per call. The files are not read
atomically together (the kernel offers no way to), so a snapshot is
"consistent enough": taken within microseconds, pressure first so that the
composition read afterwards describes the memory that was under pressure.
"""

from __future__ import annotations

from typing import Optional

from remediator.errors import KernelFileMissing, KernelParseError, KernelPermissionDenied
from remediator.kernel.meminfo import read_meminfo
from remediator.kernel.memory_events import read_memory_events
from remediator.kernel.memory_limits import (
    read_memory_current,
    read_memory_high,
    read_memory_low,
    read_memory_max,
    read_memory_min,
    read_memory_swap_max,
)
from remediator.kernel.memory_stat import STAT_FILE, check_plausible, read_memory_stat
from remediator.kernel.psi import read_cgroup_pressure, read_node_pressure
from remediator.kernel.roots import KernelRoots, normalize_cgroup
from remediator.kernel.sysctl_vm import read_vfs_cache_pressure
from remediator.readings import CgroupSnapshot, MemoryEvents, NodeSnapshot


def read_cgroup_snapshot(roots: KernelRoots, cgroup: str) -> CgroupSnapshot:
    """Read a cgroup's memory files. Raises ``CgroupGone`` if it was removed,
    another ``KernelError`` or ``KernelParseError`` otherwise."""
    name = normalize_cgroup(cgroup)
    pressure = read_cgroup_pressure(roots, name)
    current_bytes = read_memory_current(roots, name)
    max_bytes = read_memory_max(roots, name)
    stat = read_memory_stat(roots, name)
    # A stat claiming more than the cgroup can hold (a crafted or copied tree) would size a
    # reclaim or a memory.high by figures that are not the kernel's: refuse the snapshot.
    check_plausible(stat, current_bytes, max_bytes, str(roots.cgroup_file(name, STAT_FILE)))
    return CgroupSnapshot(
        cgroup=name,
        current_bytes=current_bytes,
        max_bytes=max_bytes,
        high_bytes=read_memory_high(roots, name),
        min_bytes=read_memory_min(roots, name),
        low_bytes=read_memory_low(roots, name),
        swap_max_bytes=read_memory_swap_max(roots, name),
        stat=stat,
        events=read_memory_events(roots, name),
        pressure=pressure,
        events_local=_optional_local_events(roots, name),
    )


def _optional_local_events(roots: KernelRoots, cgroup: str) -> Optional[MemoryEvents]:
    # memory.events.local appeared in 5.2; older kernels have only the hierarchical file.
    try:
        return read_memory_events(roots, cgroup, local=True)
    except KernelFileMissing:
        return None


def _optional_vfs_cache_pressure(roots: KernelRoots) -> Optional[int]:
    # Evidence only: a /proc/sys we cannot read must not cost us the node's pressure.
    try:
        return read_vfs_cache_pressure(roots)
    except (KernelFileMissing, KernelPermissionDenied, KernelParseError):
        return None


def read_node_snapshot(roots: KernelRoots) -> NodeSnapshot:
    """Read ``/proc/pressure/memory``, ``/proc/meminfo`` and ``vm.vfs_cache_pressure``."""
    pressure = read_node_pressure(roots)
    meminfo = read_meminfo(roots)
    return NodeSnapshot(
        pressure=pressure,
        mem_total_bytes=meminfo.mem_total_bytes,
        mem_available_bytes=meminfo.mem_available_bytes,
        swap_total_bytes=meminfo.swap_total_bytes,
        swap_free_bytes=meminfo.swap_free_bytes,
        slab_reclaimable_bytes=meminfo.slab_reclaimable_bytes,
        vfs_cache_pressure=_optional_vfs_cache_pressure(roots),
    )
