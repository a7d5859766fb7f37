"""Every path the program touches is built from one of two injected roots.

``--cgroup-root`` (default ``/sys/fs/cgroup``) and ``--proc-root`` (default
``/proc``) let tests use a fake tree, let a container read the host mounted at
``/host``, and let a bug report's copied tree be replayed.

A cgroup is named by its path relative to the cgroup root, POSIX-style, with
no leading slash; the root cgroup is ``""``. Names are validated here so that
no caller can build a path that escapes the root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PROC_ROOT = Path("/proc")


class InvalidCgroupName(ValueError):
    pass


def normalize_cgroup(name: str) -> str:
    """Return the canonical relative name of a cgroup, or raise InvalidCgroupName.

    Accepts an optional leading ``/`` (as printed in ``/proc/<pid>/cgroup``);
    refuses ``..``, ``.``, empty components, NUL and newlines.
    """
    stripped = name.strip("/")
    if stripped == "":
        return ""
    parts = stripped.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidCgroupName(f"invalid cgroup name {name!r}: component {part!r}")
        if "\0" in part or "\n" in part:
            raise InvalidCgroupName(f"invalid cgroup name {name!r}: control character")
    return "/".join(parts)


@dataclass(frozen=True)
class KernelRoots:
    cgroup_root: Path = DEFAULT_CGROUP_ROOT
    proc_root: Path = DEFAULT_PROC_ROOT

    def cgroup_dir(self, cgroup: str) -> Path:
        name = normalize_cgroup(cgroup)
        return self.cgroup_root / name if name else self.cgroup_root

    def cgroup_file(self, cgroup: str, filename: str) -> Path:
        if "/" in filename or filename in ("", ".", ".."):
            raise InvalidCgroupName(f"invalid cgroup file name {filename!r}")
        return self.cgroup_dir(cgroup) / filename

    def proc_file(self, relative: str) -> Path:
        """A file under the proc root, e.g. ``pressure/memory`` or ``sys/vm/drop_caches``."""
        parts = relative.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid proc path {relative!r}")
        return self.proc_root.joinpath(*parts)
