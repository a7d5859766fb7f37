"""A cgroup's ``memory.stat``, and the "flat keyed" format it shares with memory.events.

Flat keyed (Documentation/admin-guide/cgroup-v2.rst, "Interface Files")::

    KEY0 VAL0\\n
    KEY1 VAL1\\n

Kernels add keys anywhere in the list, so values are looked up by key and
unknown keys are kept for whoever needs them later.
"""

from __future__ import annotations

from typing import Dict

from remediator.errors import KernelParseError
from remediator.kernel.file_io import parse_uint, read_text
from remediator.kernel.roots import KernelRoots
from remediator.readings import MemoryStat

STAT_FILE = "memory.stat"


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
