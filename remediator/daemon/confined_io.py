"""The only way the daemon opens a kernel file for writing.

Two guarantees, enforced here and nowhere else:

- **An allow-list.** The daemon writes ``memory.high`` and ``memory.reclaim``
  of cgroups under the cgroup root, and ``sys/vm/vfs_cache_pressure`` and
  ``sys/vm/drop_caches`` under the proc root. Anything else raises
  ``WriteNotAllowed`` before a single path is opened.
- **Confinement.** Paths are never handed to ``open()`` whole. The root is
  opened as a directory, then every component below it with
  ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's fd, and the final file
  with ``O_NOFOLLOW``. A symlink anywhere below the root (a bind-mounted or
  copied tree, a hostile container runtime) therefore stops the walk with
  ``PathNotConfined`` instead of redirecting a write to another file; ``..``
  and absolute names never get that far because cgroup names go through
  ``normalize_cgroup``. The roots themselves may be symlinks: they come from
  the operator's configuration, not from the tree. A file with more than one
  hard link is refused for writing too: a link planted in a copied tree would
  carry the write to the other name (kernfs and procfs files have one link).

Reads of the value we are about to overwrite (the re-read before every write)
go through the same walk, so the file we check is the file we write.

Every ``OSError`` leaves as a ``remediator.errors.KernelError`` classified with
the cgroup directory, so that a cgroup removed between decision and write is
``CgroupGone`` and not a mysterious ENOENT.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

from remediator.errors import KernelFileMissing, RemediatorError, kernel_error_from_oserror
from remediator.kernel.roots import InvalidCgroupName, KernelRoots, normalize_cgroup
from remediator.knobs import plugins

# A cgroup's directory is found (and its id read) through the file every memory cgroup has.
MEMORY_HIGH = "memory.high"

# What remediator may write is what its knobs write: each knob module declares its files
# (``KnobPlugin.cgroup_writes``, ``node_writes``); the built-in knobs, fixed at import.
WRITABLE_CGROUP_FILES = frozenset(name for plugin in plugins() for name in plugin.cgroup_writes)
WRITABLE_PROC_FILES = frozenset(path for plugin in plugins() for path in plugin.node_writes)

# Interface files we read are a few KiB at most (memory.stat ~2 KiB); one
# read of this size returns all of it, a full buffer means there may be more.
_READ_CHUNK = 64 * 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_COMPONENT_FLAGS = _DIR_FLAGS | os.O_NOFOLLOW


class ConfinementError(RemediatorError):
    """A write (or confined read) was refused before reaching the kernel."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class WriteNotAllowed(ConfinementError):
    """The file is not on the allow-list, or the name is not a valid cgroup/file name."""


class PathNotConfined(ConfinementError):
    """A symlink or a non-directory inside the tree would have led the write elsewhere."""


@dataclass(frozen=True)
class CgroupFile:
    """An interface file of a cgroup: ``cgroup`` relative to the cgroup root ("" = root)."""

    cgroup: str
    name: str

    def describe(self) -> str:
        return f"{self.cgroup or '/'}:{self.name}"


@dataclass(frozen=True)
class ProcFile:
    """A file under the proc root, e.g. ``sys/vm/vfs_cache_pressure``."""

    relative: str

    def describe(self) -> str:
        return self.relative


KernelFile = Union[CgroupFile, ProcFile]


@dataclass(frozen=True)
class _Resolved:
    """Where a target lives: a root, the components below it, and what to report."""

    root: Path
    directories: Tuple[str, ...]
    filename: str
    path: Path  # for messages and error classification only, never opened
    cgroup_dir: Optional[Path]


class ConfinedIO:
    """Reads and writes kernel files under the two injected roots, and nowhere else."""

    def __init__(self, roots: KernelRoots) -> None:
        self._roots = roots

    @property
    def roots(self) -> KernelRoots:
        return self._roots

    # ---- public ---------------------------------------------------------
    def write(self, target: KernelFile, data: bytes) -> None:
        """Write ``data`` with one ``write()`` call, as the kernel wants for interface files.

        Raises ``ConfinementError`` (refused, nothing opened for writing) or a
        ``KernelError`` subclass (the kernel said no).
        """
        resolved = self._resolve(target, for_write=True)
        fd = self._open(resolved, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            written = os.write(fd, data)
            if written != len(data):
                # Kernel interface files take the whole value in one call or fail;
                # a short write means this is not the file we think it is.
                raise kernel_error_from_oserror(
                    OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)"),
                    resolved.path,
                    resolved.cgroup_dir,
                )
            self._drop_stale_tail(fd, written)
        except OSError as exc:
            raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
        finally:
            os.close(fd)

    def check_writable(self, target: KernelFile) -> None:
        """Everything ``write`` checks before it opens the file, without opening it: the allow-list,
        the confined walk, a regular file that is there (dry-run asks, so that a write it only
        pretends is refused as the real one would be). Raises as ``write`` would."""
        resolved = self._resolve(target, for_write=True)
        dir_fd = self._walk(resolved)
        try:
            self._check_regular_file(resolved, dir_fd)
            nlink = os.stat(resolved.filename, dir_fd=dir_fd, follow_symlinks=False).st_nlink
        except OSError as exc:
            raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
        finally:
            os.close(dir_fd)
        if nlink > 1:
            reason = f"{resolved.filename!r} has {nlink} hard links; a write would change another file"
            raise PathNotConfined(str(resolved.path), reason)

    @staticmethod
    def _drop_stale_tail(fd: int, written: int) -> None:
        """Make a plain-file tree (tests, replays of a copied tree) hold the new
        value alone, not the new value over the tail of a longer old one.

        Kernel interface files report size 0, so this never touches them; and it
        happens only after a successful write, so a failed write leaves the old
        value, as the kernel does.
        """
        if os.fstat(fd).st_size > written:
            os.ftruncate(fd, written)

    def read(self, target: KernelFile) -> str:
        """The whole content of the file, reached by the same confined walk as a write.

        Any cgroup interface file may be read (e.g. ``memory.current`` around a
        reclaim); proc files only from the write allow-list.
        """
        resolved = self._resolve(target, for_write=False)
        fd = self._open(resolved, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            parts = []
            while True:
                chunk = os.read(fd, _READ_CHUNK)
                parts.append(chunk)
                if len(chunk) < _READ_CHUNK:
                    break
        except OSError as exc:
            raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
        finally:
            os.close(fd)
        return b"".join(parts).decode("utf-8", errors="surrogateescape")

    def exists(self, target: KernelFile) -> bool:
        """Whether the file is there, without opening it; False only when it is absent.

        Some interface files are write-only (memory.reclaim has no read
        handler: opening it for reading fails), so presence is checked with a
        stat of the last component. Something that is there but is not a
        regular file (a symlink, a FIFO: a crafted tree) raises
        ``PathNotConfined``, so it is refused as such rather than taken for a
        kernel without the file. A vanished cgroup raises ``CgroupGone``.
        """
        resolved = self._resolve(target, for_write=False)
        dir_fd = self._walk(resolved)
        try:
            self._check_regular_file(resolved, dir_fd)
        except KernelFileMissing:
            return False
        finally:
            os.close(dir_fd)
        return True

    def cgroup_exists(self, cgroup: str) -> bool:
        """Whether the cgroup's directory can be reached by the confined walk."""
        try:
            resolved = self._resolve(CgroupFile(cgroup, MEMORY_HIGH), for_write=False)
        except ConfinementError:
            return False
        try:
            fd = self._walk(resolved)
        except RemediatorError:
            return False
        os.close(fd)
        return True

    def cgroup_id(self, cgroup: str) -> int:
        """The inode number of the cgroup's directory, reached by the confined walk.

        On cgroup2 it is the cgroup's id (kernfs: 64-bit, not reused while the
        system runs), so a cgroup removed and created again under the same name
        has another id: an original recorded for the first is not the second's.
        Raises ``CgroupGone`` when the directory is not there.
        """
        resolved = self._resolve(CgroupFile(cgroup, MEMORY_HIGH), for_write=False)
        fd = self._walk(resolved)
        try:
            return os.fstat(fd).st_ino
        except OSError as exc:
            raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
        finally:
            os.close(fd)

    # ---- resolution -----------------------------------------------------
    def _resolve(self, target: KernelFile, for_write: bool) -> _Resolved:
        if isinstance(target, CgroupFile):
            return self._resolve_cgroup(target, for_write)
        return self._resolve_proc(target)

    def _resolve_cgroup(self, target: CgroupFile, for_write: bool) -> _Resolved:
        if for_write and target.name not in WRITABLE_CGROUP_FILES:
            raise WriteNotAllowed(target.describe(), f"{target.name!r} is not a file remediator writes")
        if target.name in ("", ".", "..") or "/" in target.name or "\0" in target.name:
            raise WriteNotAllowed(target.describe(), f"invalid cgroup file name {target.name!r}")
        try:
            name = normalize_cgroup(target.cgroup)
        except InvalidCgroupName as exc:
            raise WriteNotAllowed(target.describe(), str(exc)) from exc
        directories = tuple(name.split("/")) if name else ()
        cgroup_dir = self._roots.cgroup_root.joinpath(*directories)
        return _Resolved(
            root=self._roots.cgroup_root,
            directories=directories,
            filename=target.name,
            path=cgroup_dir / target.name,
            cgroup_dir=cgroup_dir,
        )

    def _resolve_proc(self, target: ProcFile) -> _Resolved:
        # Reads are held to the same list: the executor has no business reading
        # other proc files, and the readers have their own module.
        if target.relative not in WRITABLE_PROC_FILES:
            raise WriteNotAllowed(target.describe(), f"{target.relative!r} is not a file remediator writes")
        parts = tuple(target.relative.split("/"))
        return _Resolved(
            root=self._roots.proc_root,
            directories=parts[:-1],
            filename=parts[-1],
            path=self._roots.proc_root.joinpath(*parts),
            cgroup_dir=None,
        )

    # ---- the walk -------------------------------------------------------
    def _walk(self, resolved: _Resolved) -> int:
        """An fd of the file's directory, reached one component at a time."""
        try:
            fd = os.open(resolved.root, _DIR_FLAGS)
        except OSError as exc:
            raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
        for component in resolved.directories:
            try:
                next_fd = os.open(component, _COMPONENT_FLAGS, dir_fd=fd)
            except OSError as exc:
                refusal = self._refusal(exc, component, fd, resolved)
                os.close(fd)
                if refusal is not None:
                    raise refusal from exc
                raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
            os.close(fd)
            fd = next_fd
        return fd

    def _open(self, resolved: _Resolved, flags: int) -> int:
        dir_fd = self._walk(resolved)
        try:
            self._check_regular_file(resolved, dir_fd)
            try:
                fd = os.open(resolved.filename, flags, dir_fd=dir_fd)
            except OSError as exc:
                refusal = self._refusal(exc, resolved.filename, dir_fd, resolved)
                if refusal is not None:
                    raise refusal from exc
                raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
        finally:
            os.close(dir_fd)
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise PathNotConfined(str(resolved.path), "not a regular file")
        if flags & (os.O_WRONLY | os.O_RDWR) and st.st_nlink > 1:
            os.close(fd)
            reason = f"{resolved.filename!r} has {st.st_nlink} hard links; a write would change another file"
            raise PathNotConfined(str(resolved.path), reason)
        return fd

    @staticmethod
    def _check_regular_file(resolved: _Resolved, dir_fd: int) -> None:
        """Look before opening: opening a FIFO planted in the tree for writing
        would block the daemon until someone reads it. (O_NOFOLLOW and the
        fstat after opening still guard against a swap in between.)"""
        try:
            mode = os.stat(resolved.filename, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError as exc:
            raise kernel_error_from_oserror(exc, resolved.path, resolved.cgroup_dir) from exc
        if stat.S_ISLNK(mode):
            reason = f"{resolved.filename!r} is a symlink; refusing to follow it"
            raise PathNotConfined(str(resolved.path), reason)
        if not stat.S_ISREG(mode):
            raise PathNotConfined(str(resolved.path), "not a regular file")

    @staticmethod
    def _refusal(exc: OSError, component: str, dir_fd: int, resolved: _Resolved) -> Optional[PathNotConfined]:
        """Turn O_NOFOLLOW's answers into a refusal: ELOOP for a symlinked file,
        ENOTDIR for a symlinked (or non-directory) path component."""
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            return None
        try:
            is_link = stat.S_ISLNK(os.stat(component, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        what = "a symlink" if is_link else "not a directory"
        return PathNotConfined(str(resolved.path), f"{component!r} is {what}; refusing to follow it")
