"""``/proc/meminfo``: node-wide memory, in bytes.

Lines are ``Key:   value kB`` (sizes) or ``Key:   value`` (counts such as
``HugePages_Total``). Keys may hold parentheses (``Active(anon)``). Sizes are
converted from kB to bytes; counts are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping

from remediator.errors import KernelParseError
from remediator.kernel.file_io import parse_uint, read_text
from remediator.kernel.roots import KernelRoots

MEMINFO_FILE = "meminfo"

# Every kernel since 3.14 (MemAvailable) prints these; the node snapshot needs them.
REQUIRED_KEYS = ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree", "SReclaimable")

_KIB = 1024


@dataclass(frozen=True)
class Meminfo:
    """All of ``/proc/meminfo`` by key (sizes in bytes), plus the fields the daemon uses."""

    values: Mapping[str, int]

    @property
    def mem_total_bytes(self) -> int:
        return self.values["MemTotal"]

    @property
    def mem_available_bytes(self) -> int:
        return self.values["MemAvailable"]

    @property
    def swap_total_bytes(self) -> int:
        return self.values["SwapTotal"]

    @property
    def swap_free_bytes(self) -> int:
        return self.values["SwapFree"]

    @property
    def slab_reclaimable_bytes(self) -> int:
        return self.values["SReclaimable"]


def parse_meminfo(text: str, source: str = "") -> Meminfo:
    """Parse ``/proc/meminfo``. Raises only ``KernelParseError``, also when a
    key in ``REQUIRED_KEYS`` is missing (so the properties never fail)."""
    values: Dict[str, int] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        key, colon, rest = raw.partition(":")
        fields = rest.split()
        key = key.strip()
        if not colon or not key or not 1 <= len(fields) <= 2:
            raise KernelParseError(source, f"expected 'Key: value [kB]', got {raw.strip()!r}")
        if key in values:
            raise KernelParseError(source, f"key {key!r} appears twice")
        number = parse_uint(fields[0], source, key)
        if len(fields) == 2:
            if fields[1] != "kB":
                raise KernelParseError(source, f"{key}: unknown unit {fields[1]!r}")
            number *= _KIB
        values[key] = number
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if missing:
        raise KernelParseError(source, f"missing {', '.join(missing)}")
    return Meminfo(values=values)


def read_meminfo(roots: KernelRoots) -> Meminfo:
    path = roots.proc_file(MEMINFO_FILE)
    return parse_meminfo(read_text(path), str(path))
