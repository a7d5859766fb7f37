"""The node-wide vm sysctls remediator may touch: reading only.

``vm.vfs_cache_pressure`` is read (its value is evidence and the original to
restore); ``vm.drop_caches`` is a write-only trigger, so all there is to know
before the executor (the only writer) uses it is whether it exists and looks
writable. Nothing in this module ever opens a sysctl for writing.
"""

from __future__ import annotations

from pathlib import Path

from remediator.errors import KernelParseError
from remediator.kernel.file_io import parse_uint, read_text
from remediator.kernel.roots import KernelRoots

VFS_CACHE_PRESSURE = "vfs_cache_pressure"
DROP_CACHES = "drop_caches"
_VM_SYSCTLS = (VFS_CACHE_PRESSURE, DROP_CACHES)


def vm_sysctl_path(roots: KernelRoots, name: str) -> Path:
    """The file of ``vm.<name>`` under the proc root (only the sysctls remediator knows)."""
    if name not in _VM_SYSCTLS:
        raise ValueError(f"unknown vm sysctl {name!r}; known: {', '.join(_VM_SYSCTLS)}")
    return roots.proc_file(f"sys/vm/{name}")


def parse_sysctl_int(text: str, source: str = "") -> int:
    """A single non-negative integer sysctl value. Raises only ``KernelParseError``."""
    fields = text.split()
    if len(fields) != 1:
        raise KernelParseError(source, f"expected one value, got {text.strip()!r}")
    return parse_uint(fields[0], source, "sysctl value")


def read_vfs_cache_pressure(roots: KernelRoots) -> int:
    path = vm_sysctl_path(roots, VFS_CACHE_PRESSURE)
    return parse_sysctl_int(read_text(path), str(path))
