"""A cgroup's single-value memory files: usage, limits and protections.

``memory.current`` is bytes. ``memory.max``, ``memory.high`` and
``memory.swap.max`` are bytes or ``max`` (unset), read here as ``None``.
``memory.min`` and ``memory.low`` are protections: ``max`` there means
"protect everything", which the readings keep as ``PROTECTION_MAX_BYTES``
because ``CgroupSnapshot`` holds them as plain ints.
"""

from __future__ import annotations

from typing import Optional

from remediator.errors import KernelFileMissing, KernelParseError
from remediator.kernel.file_io import parse_uint, read_text
from remediator.kernel.roots import KernelRoots

CURRENT_FILE = "memory.current"
MAX_FILE = "memory.max"
HIGH_FILE = "memory.high"
MIN_FILE = "memory.min"
LOW_FILE = "memory.low"
SWAP_MAX_FILE = "memory.swap.max"

UNLIMITED = "max"
# The kernel's own "no limit" (PAGE_COUNTER_MAX pages) is about LONG_MAX bytes;
# an int that large compares above any real usage, which is what "max" means
# for a protection.
PROTECTION_MAX_BYTES = 2**63 - 1


def _single_value(text: str, source: str) -> str:
    fields = text.split()
    if len(fields) != 1:
        raise KernelParseError(source, f"expected one value, got {text.strip()!r}")
    return fields[0]


def parse_limit(text: str, source: str = "") -> Optional[int]:
    """A limit file: bytes, or ``None`` for ``max``. Raises only ``KernelParseError``."""
    value = _single_value(text, source)
    if value == UNLIMITED:
        return None
    return parse_uint(value, source, "limit")


def parse_bytes(text: str, source: str = "") -> int:
    """A plain byte count (``memory.current``). Raises only ``KernelParseError``."""
    return parse_uint(_single_value(text, source), source, "bytes")


def parse_protection(text: str, source: str = "") -> int:
    """``memory.min``/``memory.low``: bytes, ``max`` as ``PROTECTION_MAX_BYTES``."""
    limit = parse_limit(text, source)
    return PROTECTION_MAX_BYTES if limit is None else limit


def _read(roots: KernelRoots, cgroup: str, filename: str) -> tuple[str, str]:
    path = roots.cgroup_file(cgroup, filename)
    return read_text(path, roots.cgroup_dir(cgroup)), str(path)


def read_memory_current(roots: KernelRoots, cgroup: str) -> int:
    return parse_bytes(*_read(roots, cgroup, CURRENT_FILE))


def read_memory_max(roots: KernelRoots, cgroup: str) -> Optional[int]:
    return parse_limit(*_read(roots, cgroup, MAX_FILE))


def read_memory_high(roots: KernelRoots, cgroup: str) -> Optional[int]:
    return parse_limit(*_read(roots, cgroup, HIGH_FILE))


def read_memory_min(roots: KernelRoots, cgroup: str) -> int:
    return parse_protection(*_read(roots, cgroup, MIN_FILE))


def read_memory_low(roots: KernelRoots, cgroup: str) -> int:
    return parse_protection(*_read(roots, cgroup, LOW_FILE))


def read_memory_swap_max(roots: KernelRoots, cgroup: str) -> Optional[int]:
    """``memory.swap.max``; ``None`` for ``max`` and when the file does not exist
    (kernels built without the swap controller). A removed cgroup still raises
    ``CgroupGone``."""
    try:
        text, source = _read(roots, cgroup, SWAP_MAX_FILE)
    except KernelFileMissing:
        return None
    return parse_limit(text, source)
