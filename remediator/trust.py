"""Whether a settings or policy file may be believed.

remediator runs as root and writes kernel knobs that decide whether other
tenants' workloads stall. Whoever can edit a policy or the settings file
decides what it writes, so, like sshd's StrictModes, it believes a file only
when nobody but root could have written it:

- the file is owned by root and is not writable by group or others;
- so is every directory from the file up to ``/``: a writable directory lets
  its writer replace the file (rename, unlink + create) however strict the
  file's own mode is.

One exception keeps ``/tmp``-style directories usable *above* the file's own
directory: a sticky directory (``o+t``, mode 1777) may be writable by others,
because the sticky bit lets only an entry's owner (root here) rename or remove
it. The file's own directory must never be group/other-writable, sticky or
not: anyone could drop new policy files into it.

"Owned by root" means owned by uid 0 or by the daemon's own effective uid:
in production the daemon is root and the two are the same; a developer's
unprivileged run trusts the developer's own files, which that process could
rewrite anyway (sshd's rule for the user's own files, for the same reason).

Paths are resolved (``realpath``) before the walk, so a symlink is judged by
what it points to, and every directory on the real path is examined. The
check is by path and then the caller opens the same path: that is sound
because, once every directory of the chain is trusted, only root can change
what the path resolves to in between.

The documented override for development is the setting
``insecure_allow_untrusted_files: true`` (environment
``REMEDIATOR_INSECURE_ALLOW_UNTRUSTED_FILES=1``); it is never the default,
and the settings file cannot grant it to itself (see ``remediator.settings``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, List, Optional

ROOT_UID = 0
OVERRIDE_SETTING = "insecure_allow_untrusted_files"
OVERRIDE_ENV = "REMEDIATOR_INSECURE_ALLOW_UNTRUSTED_FILES"

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


@dataclass(frozen=True)
class UntrustedFile:
    """Why ``subject`` (a settings or policy file, or a policy directory) is refused.

    ``culprit`` is the file or directory that failed the check (the subject
    itself or a directory above it), with its owner and mode.
    """

    subject: Path
    culprit: Path
    uid: int
    mode: int  # permission bits only (stat.S_IMODE)
    reason: str
    # Whether the culprit is a directory above the subject, not the subject itself: said in the
    # message. (Comparing paths was wrong for a file reached by a relative path or a symlink, whose
    # culprit is the resolved path: a group-writable policy file was called a "directory".)
    culprit_is_above: bool = False

    @property
    def mode_text(self) -> str:
        return f"{self.mode:04o}"

    def message(self) -> str:
        """One line for a located issue: names the culprit, its mode and owner, and the way out."""
        above = "directory " if self.culprit_is_above else ""
        facts = f" (mode {self.mode_text}, owner uid {self.uid})" if self.uid >= 0 else ""
        what = f"{above}{self.culprit}{facts} {self.reason}"
        return (
            f"not trusted: {what}; settings and policy files and every directory above them must be owned "
            f"by root and writable only by it (chmod go-w / chown root), or set {OVERRIDE_SETTING}: true "
            "for development"
        )


def trusted_owners() -> FrozenSet[int]:
    """Root, and the daemon's own user (the same uid in production)."""
    return frozenset({ROOT_UID, os.geteuid()})


def _writers(mode: int) -> str:
    group = bool(mode & stat.S_IWGRP)
    others = bool(mode & stat.S_IWOTH)
    if group and others:
        return "group and others"
    return "group" if group else "others"


def _examine(
    subject: Path, path: Path, owners: FrozenSet[int], *, sticky_ok: bool, above: bool
) -> Optional[UntrustedFile]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        # Existence is the caller's business ("does not exist" is its own issue).
        return None
    except OSError as exc:
        return UntrustedFile(subject, path, -1, 0, f"cannot be examined ({exc.strerror or exc})", above)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in owners:
        return UntrustedFile(
            subject, path, st.st_uid, mode, f"is owned by uid {st.st_uid}, not by root", above
        )
    if mode & _WRITABLE_BY_OTHERS:
        sticky_dir = stat.S_ISDIR(st.st_mode) and bool(mode & stat.S_ISVTX)
        if not (sticky_ok and sticky_dir):
            return UntrustedFile(subject, path, st.st_uid, mode, f"is writable by {_writers(mode)}", above)
    return None


def _chain(real: Path) -> List[Path]:
    """``real`` and every directory above it, nearest first, ending with ``/``."""
    return [real, *real.parents]


def check_file(path: Path, owners: Optional[FrozenSet[int]] = None) -> Optional[UntrustedFile]:
    """None when ``path`` (a file) may be believed; otherwise the reason it may not.

    A missing file is not judged here (None): the caller reports it its own way.
    """
    allowed = owners if owners is not None else trusted_owners()
    real = Path(os.path.realpath(path))
    chain = _chain(real)
    # The file and its own directory: no write access for anyone else, sticky or not.
    for index, strict in enumerate(chain[:2]):
        found = _examine(path, strict, allowed, sticky_ok=False, above=index > 0)
        if found is not None:
            return found
    for directory in chain[2:]:
        found = _examine(path, directory, allowed, sticky_ok=True, above=True)
        if found is not None:
            return found
    return None


def check_directory(path: Path, owners: Optional[FrozenSet[int]] = None) -> Optional[UntrustedFile]:
    """None when the directory ``path`` (the policies directory) may be believed.

    The directory itself must not be writable by anyone else (anyone could add
    a policy); the directories above it may be sticky (``/tmp``).
    """
    allowed = owners if owners is not None else trusted_owners()
    real = Path(os.path.realpath(path))
    chain = _chain(real)
    found = _examine(path, chain[0], allowed, sticky_ok=False, above=False)
    if found is not None:
        return found
    for directory in chain[1:]:
        found = _examine(path, directory, allowed, sticky_ok=True, above=True)
        if found is not None:
            return found
    return None


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symlink"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_type_name(mode: int) -> str:
    """``a directory``, ``a FIFO``, ... for an ``st_mode`` that is not a regular file."""
    for test, name in _FILE_TYPES:
        if test(mode):
            return name
    return "not a regular file"


def path_text_problem(text: str) -> Optional[str]:
    """Why ``text`` cannot name a file the daemon uses, or None.

    One rule for every path-valued setting, from every source: not empty
    (``Path("")`` is ``.``, the working directory), no NUL byte (no system call
    takes one: the daemon would crash at the first open), and absolute (a
    relative path would be resolved against whatever directory the daemon was
    started from: ``/`` under systemd, elsewhere by hand). The command line
    makes its relative arguments absolute against the caller's directory, as
    every command-line tool does, before they get here.
    """
    if text == "":
        return "must not be empty"
    if "\0" in text:
        return "must not contain a NUL byte"
    if not text.startswith("/"):
        return (
            f"must be an absolute path (got {text!r}): a relative one would depend on "
            "the directory the daemon was started from"
        )
    return None


# What every state file remediator.daemon.state_store writes begins with: "{" then, within its first bytes,
# one of its two top-level keys (sorted: "entries" comes first).
_HEADER_BYTES = 256
_HEADER_KEYS = (b'"entries"', b'"schema_version"')


def carries_state_header(path: Path) -> bool:
    """Whether the file at ``path`` is one the state store could have written (or is empty).

    Decides whether the store's quarantine may move it, and whether settings
    accept the path: an empty file has nothing to lose, a remediator file is
    ours to move, and anything else (``/etc/passwd`` named by a typo) is not
    ours to touch. Never blocks: O_NONBLOCK, regular files only.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, _HEADER_BYTES)
    except OSError:
        return False
    finally:
        os.close(fd)
    if not head.strip():
        return True
    return head.lstrip().startswith(b"{") and any(key in head for key in _HEADER_KEYS)


def state_path_problem(path: Path, owners: Optional[FrozenSet[int]] = None) -> Optional[str]:
    """None when ``path`` may be the state file; otherwise why not, in one clause.

    The state file holds the originals every restore needs, and the daemon
    replaces it (rename) and moves an invalid one aside. So the path must be
    absent or a regular file (never a directory, a symlink, a FIFO, ... that
    the daemon would rename away), and its directory must be one only root
    can write (owned by root or the daemon's user, no group/other write bit,
    not even sticky); the directories above it may be sticky (``/tmp``), as
    for settings files. A directory that does not exist yet is judged by the
    ones above it (the daemon creates it 0700, and refuses it at the write if
    someone else created it first).

    A path an unprivileged ``check`` may not look into (EACCES below a 0700
    directory) is not refused: only root could have put anything there, and
    the daemon, as root, looks again at start.
    """
    text_problem = path_text_problem(os.fspath(path))
    if text_problem is not None:
        return text_problem
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except PermissionError:
        return None
    except NotADirectoryError:
        return f"{path}: a directory above it is not a directory"
    except OSError as exc:
        return f"{path} cannot be examined ({exc.strerror or exc})"
    else:
        if not stat.S_ISREG(st.st_mode):
            return (
                f"{path} is {file_type_name(st.st_mode)}; the state file must be a regular file "
                "(or absent), which the daemon replaces and, when invalid, moves aside"
            )
        # Unreadable to an unprivileged `check`: judged by the daemon, as root, at start.
        if os.access(path, os.R_OK) and not carries_state_header(path):
            return (
                f"{path} is not a remediator state file; the daemon would replace it with one "
                "(name a path of its own, e.g. /var/lib/remediator/state.json)"
            )
    untrusted = check_directory(path.parent, owners)
    if untrusted is None:
        return None
    facts = f" (mode {untrusted.mode_text}, owner uid {untrusted.uid})" if untrusted.uid >= 0 else ""
    return (
        f"directory {untrusted.culprit}{facts} {untrusted.reason}; the state file's directory must be "
        "one only root can write (it holds the originals every restore needs), such as /run/remediator"
    )


__all__ = [
    "OVERRIDE_ENV",
    "OVERRIDE_SETTING",
    "ROOT_UID",
    "UntrustedFile",
    "check_directory",
    "check_file",
    "file_type_name",
    "path_text_problem",
    "carries_state_header",
    "state_path_problem",
    "trusted_owners",
]
