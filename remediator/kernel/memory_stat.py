"""A cgroup's ``memory.stat``, and the "flat keyed" format it shares with memory.events.

Flat keyed (Documentation/admin-guide/cgroup-v2.rst, "Interface Files")::

    KEY0 VAL0\\n
    KEY1 VAL1\\n

Kernels add keys anywhere in the list, so values are looked up by key and
unknown keys are kept for whoever needs them later.

A value that parses can still be garbage (a copied or crafted tree, a bug): a
``file`` of 2**64 made the reclaim rung write chunks for its whole time
budget. ``check_plausible`` refuses byte figures that the cgroup's usage
cannot hold.
"""

from __future__ import annotations

from typing import Dict, Optional

from remediator.errors import KernelParseError
from remediator.kernel.file_io import parse_uint, read_text
from remediator.kernel.roots import KernelRoots
from remediator.readings import MemoryStat

STAT_FILE = "memory.stat"

MiB = 1 << 20

# The keys whose bytes are each a part of what memory.current counts, whatever
# the kernel's options (cgroup-v2.rst, "memory.stat"), so none can honestly
# exceed it: anon and file memory and their LRU and THP parts, what file
# memory is made of (shmem, mapped, dirty, writeback), swap cache, and kernel
# memory charged to the cgroup. Not compared:
# - event counters and page counts (pgscan, pgsteal, pgfault, workingset_*,
#   thp_*, zswpin, ...): they only grow, and are not bytes;
# - ``zswapped``: the size of what was swapped *out* to zswap before
#   compression (``zswap``, the compressed pool, is charged and compared);
# - ``hugetlb``: charged to memory.current only under the
#   memory_hugetlb_accounting mount option;
# - keys this list does not know: a newer kernel's key may not be a part of usage.
USAGE_PART_KEYS = frozenset(
    {
        "anon", "file", "shmem", "file_mapped", "file_dirty", "file_writeback", "swapcached",
        "anon_thp", "file_thp", "shmem_thp", "active_anon", "inactive_anon", "active_file",
        "inactive_file", "unevictable", "kernel", "kernel_stack", "pagetables", "sec_pagetables",
        "percpu", "sock", "vmalloc", "zswap", "slab", "slab_reclaimable", "slab_unreclaimable",
    }
)  # fmt: skip

# How far an honest part may exceed memory.current (or memory.max when that is
# higher). The kernel batches stat updates per CPU (MEMCG_CHARGE_BATCH, 64
# pages) and flushes them when reading memory.stat only past a threshold of
# that much per CPU: 256 MiB covers 1,024 CPUs with 4 KiB pages (64 with 64 KiB
# pages). memory.current is read before memory.stat, microseconds apart: no
# cgroup faults in 256 MiB in between. Garbage (2**64, a stray digit run) is
# far beyond it.
STAT_SKEW_BYTES = 256 * MiB


class ImplausibleMemoryStat(KernelParseError):
    """A memory.stat figure larger than the cgroup's usage can hold: refused, not acted on."""

    def __init__(self, path: str, message: str, key: str, value: int, ceiling: int) -> None:
        super().__init__(path, message)
        self.key = key
        self.value = value
        self.ceiling = ceiling


def parse_flat_keyed(text: str, source: str = "") -> Dict[str, int]:
    """``key value`` lines -> {key: value}; values are non-negative integers.

    Blank lines and trailing whitespace are tolerated; a line that is not
    exactly two fields, a non-integer value or a repeated key raises
    ``KernelParseError``: a file we cannot read unambiguously is not guessed at.
    """
    values: Dict[str, int] = {}
    for raw in text.splitlines():
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise KernelParseError(source, f"expected 'key value', got {raw.strip()!r}")
        key, value = fields
        if key in values:
            raise KernelParseError(source, f"key {key!r} appears twice")
        values[key] = parse_uint(value, source, key)
    return values


def parse_memory_stat(text: str, source: str = "") -> MemoryStat:
    """Parse ``memory.stat``. Raises only ``KernelParseError``."""
    return MemoryStat(values=parse_flat_keyed(text, source))


def read_memory_stat(roots: KernelRoots, cgroup: str) -> MemoryStat:
    path = roots.cgroup_file(cgroup, STAT_FILE)
    return parse_memory_stat(read_text(path, roots.cgroup_dir(cgroup)), str(path))


def check_plausible(stat: MemoryStat, current_bytes: int, max_bytes: Optional[int], source: str = "") -> None:
    """Refuse a snapshot whose memory.stat claims more bytes in one part of usage
    (``USAGE_PART_KEYS``) than memory.current, or memory.max when set and higher,
    plus ``STAT_SKEW_BYTES``.

    memory.max counts as well as memory.current because stats lag usage a little
    after a large free, and a figure within the limit cannot make an action ask
    for more than the cgroup may hold. ``max_bytes`` None is "max" (no limit).
    Raises ``ImplausibleMemoryStat`` (a ``KernelParseError``) naming the key and
    both figures; the first offending key in the file's order is named.
    """
    usage = current_bytes if max_bytes is None else max(current_bytes, max_bytes)
    ceiling = usage + STAT_SKEW_BYTES
    for key, value in stat.values.items():
        if key in USAGE_PART_KEYS and value > ceiling:
            limit = "" if max_bytes is None else f", memory.max {max_bytes}"
            raise ImplausibleMemoryStat(
                source,
                f"{key} {value} bytes is more than the cgroup's usage can hold (memory.current "
                f"{current_bytes}{limit}, plus {STAT_SKEW_BYTES // MiB} MiB for the kernel's stat "
                "batching): refused as implausible",
                key,
                value,
                ceiling,
            )
