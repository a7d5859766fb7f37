"""Reading kernel interface files, and the decimal number format they all share.

Readers run on the daemon's hot path (every cgroup, every sample), so a read is
one ``open``, one ``fstat`` (see below) and, for the small files the kernel
serves, one ``read``: Python's buffered ``open().read()`` adds an ``lseek`` and a
second read to find EOF. Every ``OSError`` leaves this module as a domain error from
``remediator.errors``, classified with the cgroup directory so that a removed
cgroup reads as ``CgroupGone`` rather than a missing file.

The kernel serves only regular files, so anything else (a FIFO, a device, a
directory: a copied or crafted tree) is refused before it is read. The open is
non-blocking, so a FIFO without a writer cannot hang the daemon or ``status``
at the open either (issue 12: a FIFO in place of memory.stat did both).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

from remediator.errors import KernelFileNotRegular, KernelParseError, kernel_error_from_oserror

# Bigger than any memory interface file (memory.stat is ~2 KiB, /proc/meminfo
# ~1.5 KiB) so that one read returns the whole file. The kernel's seq_file
# reads fill the buffer as far as the content goes, so a short read is EOF;
# only a full buffer means there may be more (e.g. a long /proc/self/mounts).
_READ_CHUNK = 64 * 1024

_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)

# The kernel prints counters as %llu: at most 20 digits (2**64 - 1).
MAX_UINT_DIGITS = 20


def read_text(path: Path, cgroup_dir: Optional[Path] = None) -> str:
    """The whole content of a kernel file, decoded.

    ``cgroup_dir`` is the directory of the cgroup the file belongs to, if any:
    ENOENT then becomes ``CgroupGone`` when that directory has vanished too.
    Raises only ``remediator.errors.KernelError`` subclasses;
    ``KernelFileNotRegular`` for anything but a regular file.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer.
        # It changes nothing for the regular files below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise kernel_error_from_oserror(exc, path, cgroup_dir) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "of another kind")
            raise KernelFileNotRegular(
                path, f"is {kind}, not a regular file: kernel interface files are regular files"
            )
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
