"""Split a cgroup's usage into what reclaim can take and what it cannot.

The distinction decides whether acting helps or harms (kernel-facts.md):
- ``file`` in memory.stat includes shmem/tmpfs, which reclaim cannot drop
  without swap; shmem sits on the anon LRU, so active_file + inactive_file
  already leaves it out.
- dirty and writeback pages need I/O first, so they are not counted as cheap
  to reclaim.
- anon is unreclaimable when there is no swap to push it to.
- memory.high below the unreclaimable part turns an OOM kill into an endless
  stall, so that part (plus a margin) is the floor under every memory.high we set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from remediator.readings import CgroupSnapshot, NodeSnapshot

PAGE_SIZE = 4096


@dataclass(frozen=True)
class MemoryComposition:
    usage_bytes: int
    anon_bytes: int
    file_bytes: int
    shmem_bytes: int
    file_mapped_bytes: int
    dirty_bytes: int  # file_dirty + file_writeback
    slab_bytes: int
    kernel_bytes: int  # all kernel memory charged to the cgroup
    sock_bytes: int
    reclaimable_cache_bytes: int  # clean, non-shmem page cache: what memory.reclaim can take cheaply
    unreclaimable_bytes: int  # what no reclaim can take (given the swap situation)
    swap_usable: bool

    def fraction_of_usage(self, part: int) -> float:
        return part / self.usage_bytes if self.usage_bytes > 0 else 0.0


def swap_usable(snapshot: CgroupSnapshot, node: Optional[NodeSnapshot]) -> bool:
    """Anon can only be reclaimed if the node has swap and the cgroup may use it."""
    if node is None or node.swap_total_bytes <= 0:
        return False
    return snapshot.swap_max_bytes is None or snapshot.swap_max_bytes > 0


def _reclaimable_cache(snapshot: CgroupSnapshot) -> int:
    stat = snapshot.stat
    dirty = stat.get("file_dirty") + stat.get("file_writeback")
    if "active_file" in stat or "inactive_file" in stat:
        lru_file = stat.get("active_file") + stat.get("inactive_file")
    else:
        # Old kernels and copied fixtures without the LRU split: file minus shmem.
        lru_file = stat.get("file") - stat.get("shmem")
    return max(0, lru_file - dirty)


def _unreclaimable_kernel(snapshot: CgroupSnapshot) -> int:
    stat = snapshot.stat
    slab_reclaimable = stat.get("slab_reclaimable")
    if "kernel" in stat:
        # 5.18+: "kernel" covers stacks, page tables, percpu, vmalloc and slab.
        return max(0, stat.get("kernel") - slab_reclaimable)
    slab_unreclaimable = stat.get("slab_unreclaimable") if "slab_unreclaimable" in stat else stat.get("slab")
    return (
        stat.get("kernel_stack")
        + stat.get("pagetables")
        + stat.get("percpu")
        + stat.get("vmalloc")
        + slab_unreclaimable
    )


def compose(snapshot: CgroupSnapshot, node: Optional[NodeSnapshot] = None) -> MemoryComposition:
    stat = snapshot.stat
    usable = swap_usable(snapshot, node)
    shmem = stat.get("shmem")
    anon = stat.get("anon")
    kernel_total = (
        stat.get("kernel")
        if "kernel" in stat
        else (
            stat.get("kernel_stack")
            + stat.get("pagetables")
            + stat.get("percpu")
            + stat.get("vmalloc")
            + stat.get("slab")
        )
    )
    unreclaimable = (0 if usable else anon + shmem) + _unreclaimable_kernel(snapshot) + stat.get("sock")
    return MemoryComposition(
        usage_bytes=snapshot.current_bytes,
        anon_bytes=anon,
        file_bytes=stat.get("file"),
        shmem_bytes=shmem,
        file_mapped_bytes=stat.get("file_mapped"),
        dirty_bytes=stat.get("file_dirty") + stat.get("file_writeback"),
        slab_bytes=stat.get("slab"),
        kernel_bytes=kernel_total,
        sock_bytes=stat.get("sock"),
        reclaimable_cache_bytes=_reclaimable_cache(snapshot),
        unreclaimable_bytes=unreclaimable,
        swap_usable=usable,
    )


def page_align_up(value: int) -> int:
    return -(-value // PAGE_SIZE) * PAGE_SIZE


def page_align_down(value: int) -> int:
    return (value // PAGE_SIZE) * PAGE_SIZE


def memory_high_floor(
    composition: MemoryComposition, margin_bytes: int, explicit_min_bytes: Optional[int]
) -> int:
    """The lowest memory.high we will ever write: unreclaimable + margin, or the
    operator's explicit floor if that is higher; page-aligned upwards."""
    floor = composition.unreclaimable_bytes + margin_bytes
    if explicit_min_bytes is not None:
        floor = max(floor, explicit_min_bytes)
    return page_align_up(floor)
