"""Reading kernel interface files, and the decimal number format they all share.

Readers run on the daemon's hot path (every cgroup, every sample), so a read is
one ``open`` and, for the small files the kernel serves, one ``read``: Python's
buffered ``open().read()`` adds an ``fstat``, an ``lseek`` and a second read to
find EOF. Every ``OSError`` leaves this module as a domain error from
``remediator.errors``, classified with the cgroup directory so that a removed
cgroup reads as ``CgroupGone`` rather than a missing file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from remediator.errors import KernelParseError, kernel_error_from_oserror

# Bigger than any memory interface file (memory.stat is ~2 KiB, /proc/meminfo
# ~1.5 KiB) so that one read returns the whole file. The kernel's seq_file
# reads fill the buffer as far as the content goes, so a short read is EOF;
# only a full buffer means there may be more (e.g. a long /proc/self/mounts).
_READ_CHUNK = 64 * 1024

# The kernel prints counters as %llu: at most 20 digits (2**64 - 1).
MAX_UINT_DIGITS = 20


def read_text(path: Path, cgroup_dir: Optional[Path] = None) -> str:
    """The whole content of a kernel file, decoded.

    ``cgroup_dir`` is the directory of the cgroup the file belongs to, if any:
    ENOENT then becomes ``CgroupGone`` when that directory has vanished too.
    Raises only ``remediator.errors.KernelError`` subclasses.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise kernel_error_from_oserror(exc, path, cgroup_dir) from exc
    try:
        chunk = os.read(fd, _READ_CHUNK)
        if len(chunk) < _READ_CHUNK:
            data = chunk
        else:
            parts = [chunk]
            while chunk:
                chunk = os.read(fd, _READ_CHUNK)
                parts.append(chunk)
            data = b"".join(parts)
    except OSError as exc:
        raise kernel_error_from_oserror(exc, path, cgroup_dir) from exc
    finally:
        os.close(fd)
    # Interface files are ASCII; mount points may hold any bytes, which
    # surrogateescape keeps so that a path read here can be used as a path.
    return data.decode("utf-8", errors="surrogateescape")


def parse_uint(token: str, source: str, what: str) -> int:
    """A non-negative decimal integer as the kernel prints it (``%llu``).

    Stricter than ``int()``, which also accepts ``+5``, ``1_000``, surrounding
    spaces and non-ASCII digits: none of those is something the kernel writes,
    so seeing one means the file is not what we think it is.
    """
    if not (token.isascii() and token.isdigit()):
        raise KernelParseError(source, f"{what}: expected a non-negative integer, got {token!r}")
    if len(token) > MAX_UINT_DIGITS:
        # int() of a few thousand digits raises ValueError (CPython's limit on
        # str->int conversion): a parse error, not a crash of the caller.
        raise KernelParseError(source, f"{what}: {len(token)} digits is more than a 64-bit counter holds")
    return int(token)
