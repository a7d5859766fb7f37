"""Domain errors.

Kernel interfaces raise ``OSError`` with an errno; the edge (readers and the
executor) turns those into the few cases the rest of the program reasons about:
the cgroup is gone, a file is missing, we lack permission, the kernel is busy
for a moment, or something else. Only ``KernelTransient`` is ever retried.
"""

from __future__ import annotations

import errno as errno_mod
import os
from pathlib import Path
from typing import Optional


class RemediatorError(Exception):
    """Base of every error this program raises on purpose."""


class KernelError(RemediatorError):
    """A kernel file could not be read or written."""

    def __init__(self, path: Path, message: str, errno: Optional[int] = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.errno = errno

    @property
    def errno_name(self) -> str:
        return errno_mod.errorcode.get(self.errno, str(self.errno)) if self.errno is not None else ""


class CgroupGone(KernelError):
    """The cgroup was removed (ENOENT on its directory, ENODEV on its files)."""


class KernelFileMissing(KernelError):
    """The cgroup exists but the interface file does not (old kernel, controller not enabled)."""


class KernelPermissionDenied(KernelError):
    """EACCES/EPERM/EROFS: we are not allowed to do this; retrying will not help."""


class KernelTransient(KernelError):
    """EAGAIN/EBUSY/EINTR: the kernel was busy; a bounded retry may succeed."""


class KernelOther(KernelError):
    """Any other OSError: recorded, never fatal to the daemon."""


class KernelFileNotRegular(KernelError):
    """The path is a FIFO, a device, a socket or a directory: never a file the kernel serves.

    cgroupfs, /proc and /proc/sys only hold regular files; anything else is in a
    copied or crafted tree, and reading it could block for ever (a FIFO) or
    read a device. Refused before any read, saying what it is; callers treat it
    as any other file that cannot be read.
    """


class KernelParseError(RemediatorError):
    """A kernel file's content did not have the documented format."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


_GONE = {errno_mod.ENODEV}
_PERMISSION = {errno_mod.EACCES, errno_mod.EPERM, errno_mod.EROFS}
_TRANSIENT = {errno_mod.EAGAIN, errno_mod.EBUSY, errno_mod.EINTR}


def kernel_error_from_oserror(exc: OSError, path: Path, cgroup_dir: Optional[Path] = None) -> KernelError:
    """Classify an OSError raised while touching ``path``.

    ``cgroup_dir`` is the directory of the cgroup the file belongs to, when
    there is one: ENOENT on a file whose cgroup directory has vanished means
    the cgroup is gone, not that the kernel lacks the interface.
    """
    code = exc.errno
    message = exc.strerror or str(exc)
    if code in _GONE:
        return CgroupGone(path, message, code)
    if code == errno_mod.ENOENT:
        if cgroup_dir is not None and not os.path.isdir(cgroup_dir):
            return CgroupGone(path, message, code)
        return KernelFileMissing(path, message, code)
    if code in _PERMISSION:
        return KernelPermissionDenied(path, message, code)
    if code in _TRANSIENT:
        return KernelTransient(path, message, code)
    return KernelOther(path, message, code)
