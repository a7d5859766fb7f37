"""The record of every value remediator owns, kept on disk before it is changed.

Reversibility rests on this file: before the first write to a ``memory.high``
or to ``vm.vfs_cache_pressure`` the original value is recorded here, so that a
later rollback, a clean shutdown or the next start after a crash can put it
back. Hence:

- **Write-ahead.** An entry is on disk (temp file in the same directory,
  fsync, rename, fsync of the directory) before the kernel value changes. If
  the store cannot be written (read-only directory, ENOSPC) the caller gets
  ``StateUnwritable`` and must refuse the change: what we cannot record, we
  cannot undo.
- **First original wins.** Recording an already-owned value again is a no-op,
  so the value from before our *first* write survives any number of changes.
- **Crash window.** Each write is announced (``begin_write``; with the
  original in the same save, ``record_and_begin_write``) before it is made and
  confirmed (``update_ours``) after, so a crash between the two still leaves a
  store that recognises the value in the kernel as ours. Two saves per write.
- **Bounded.** The writer refuses to record a new value (``StateFull``, so the
  change is refused with a record) when the file, with every entry at its
  widest, would cross the same ``MAX_STATE_FILE_BYTES`` the loader accepts:
  a file the next start would not trust is never written. Entries of cgroups
  that are gone are dropped by the executor before a new one is added.
- **Distrust on load.** The file is validated strictly (schema version,
  allowed kinds and names only, integers in range, canonical cgroup names,
  owner and mode). Anything else is moved aside to ``<name>.quarantine.<n>``
  and never acted upon: a tampered file must not make the daemon write
  attacker-chosen values to attacker-chosen cgroups at start-up.

JSON layout (schema_version 1)::

    {"schema_version": 1,
     "entries": [{"kind": "memory_high", "cgroup": "system.slice/a.service",
                  "cgroup_id": 4211, "original": "max", "ours": 3221225472, "pending": null,
                  "policy": "cache-heavy", "recorded_at": 1700000000.0},
                 {"kind": "sysctl", "sysctl": "vfs_cache_pressure",
                  "original": 100, "ours": 200, "pending": {"value": 200}, ...}]}
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Tuple

from pydantic import ValidationError

from remediator.daemon.state_schema import (
    MAX_STATE_FILE_BYTES,
    OwnedValue,
    PendingWrite,
    StateFileModel,
    StoreKey,
    encode_entries,
    owned_from_model,
    validate_key,
    widest_form,
)
from remediator.errors import RemediatorError
from remediator.kernel.roots import InvalidCgroupName
from remediator.records import Record, RecordType
from remediator.trust import carries_state_header


class StateUnwritable(RemediatorError):
    """The state file (or its directory) could not be written: refuse the change."""

    def __init__(self, path: Path, message: str, errno: Optional[int] = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.errno = errno

    @property
    def errno_name(self) -> str:
        return errno_mod.errorcode.get(self.errno, str(self.errno)) if self.errno is not None else ""


class StateFull(StateUnwritable):
    """One more entry could make the file larger than the loader accepts: refuse the new value."""


def _first_record(
    key: StoreKey, original: Optional[int], policy: str, wall_time: float, cgroup_id: Optional[int]
) -> OwnedValue:
    """A value's entry as first recorded: ours is still the original until our write lands."""
    return OwnedValue(
        kind=key[0],
        name=key[1],
        original=original,
        ours=original,
        policy=policy,
        recorded_at=wall_time,
        cgroup_id=cgroup_id,
    )


class _InvalidStateFile(Exception):
    """Why a state file is not trusted (internal: becomes a quarantine)."""


def _directory_problem(directory: Path) -> Optional[str]:
    """Why the state file's directory is not private to us, or None.

    Whoever can write the directory can remove or replace the state file (and
    with it the originals a restore needs), so it must be ours and writable by
    nobody else: 0700 as created here and by systemd's RuntimeDirectoryMode=.
    """
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"its directory {directory} cannot be examined ({exc.strerror or exc})"
    if st.st_uid != os.geteuid():
        return f"its directory {directory} is owned by uid {st.st_uid}, not by us"
    if st.st_mode & 0o022:
        return f"its directory {directory} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


# ---- the store -----------------------------------------------------------------


class StateStore:
    """Owned values, persisted atomically to ``path`` (or kept in memory only).

    Every mutation is on disk when the method returns, or the method raises
    ``StateUnwritable`` and the in-memory view is unchanged.
    """

    def __init__(
        self, path: Optional[Path], max_bytes: int = MAX_STATE_FILE_BYTES, *, read_only: bool = False
    ) -> None:
        self._path = path
        # Dry-run's store: the file is loaded (and distrusted) as ever, but nothing is moved aside
        # and every change stays in memory.
        self._read_only = read_only
        # One limit for what is written and what is loaded: the writer never makes a file
        # the loader would refuse (and quarantine, losing the originals of live clamps).
        self._max_bytes = max_bytes
        self._entries: Dict[StoreKey, OwnedValue] = {}
        # Why the file at the path is someone else's (load left it in place), or None.
        self._foreign: Optional[str] = None

    @classmethod
    def read_only(cls, path: Optional[Path], max_bytes: int = MAX_STATE_FILE_BYTES) -> StateStore:
        """Dry-run's store: what a previous run left is loaded and reported, never moved or changed;
        the originals of this run are kept in memory only."""
        return cls(path, max_bytes, read_only=True)

    @property
    def path(self) -> Optional[Path]:
        return self._path

    # ---- queries ------------------------------------------------------------
    def entries(self) -> Tuple[OwnedValue, ...]:
        return tuple(self._entries[k] for k in sorted(self._entries))

    def get(self, kind: str, name: str) -> Optional[OwnedValue]:
        return self._entries.get(validate_key(kind, name))

    # ---- mutations ----------------------------------------------------------
    def record_original(
        self,
        kind: str,
        name: str,
        original: Optional[int],
        policy: str,
        wall_time: float,
        cgroup_id: Optional[int] = None,
    ) -> OwnedValue:
        """Record ``original`` unless this value is already owned; returns the entry in force.

        The FIRST original is kept: a second call (even with another value)
        changes nothing, because only the value from before our first write is
        the one to give back.
        """
        key = validate_key(kind, name)
        existing = self._entries.get(key)
        if existing is not None:
            return existing
        entry = _first_record(key, original, policy, wall_time, cgroup_id)
        self._commit({**self._entries, key: entry})
        return entry

    def begin_write(self, kind: str, name: str, value: Optional[int]) -> None:
        """Announce that ``value`` is about to be written (persisted before the write)."""
        key = validate_key(kind, name)
        entry = self._require(key)
        self._commit({**self._entries, key: replace(entry, pending=PendingWrite(value))})

    def record_and_begin_write(
        self,
        kind: str,
        name: str,
        original: Optional[int],
        policy: str,
        wall_time: float,
        value: Optional[int],
        cgroup_id: Optional[int] = None,
    ) -> None:
        """``record_original`` and ``begin_write`` in one persisted step.

        The same two facts reach the disk before the write, with one fsync'd save instead of two
        on the reaction's path (a first write of an episode is always a first recording).
        """
        key = validate_key(kind, name)
        entry = self._entries.get(key) or _first_record(key, original, policy, wall_time, cgroup_id)
        self._commit({**self._entries, key: replace(entry, pending=PendingWrite(value))})

    def update_ours(self, kind: str, name: str, value: Optional[int]) -> None:
        """``value`` is now in the kernel because we wrote it."""
        key = validate_key(kind, name)
        entry = self._require(key)
        self._commit({**self._entries, key: replace(entry, ours=value, pending=None)})

    def abandon_write(self, kind: str, name: str) -> None:
        """The announced write did not happen: forget the pending value."""
        key = validate_key(kind, name)
        entry = self._entries.get(key)
        if entry is not None and entry.pending is not None:
            self._commit({**self._entries, key: replace(entry, pending=None)})

    def drop(self, kind: str, name: str) -> None:
        """Forget an owned value (restored, released, or taken over by another writer)."""
        key = validate_key(kind, name)
        if key in self._entries:
            remaining = dict(self._entries)
            del remaining[key]
            self._commit(remaining)

    # ---- loading ------------------------------------------------------------
    def load(self) -> Tuple[Record, ...]:
        """Read the file, replacing the in-memory view. A missing file is an empty store.

        An invalid, corrupt or suspicious file is moved aside (a read-only
        store only reports it, for dry-run) and a STATE_QUARANTINED record is
        returned; nothing in it is trusted. Only a file that carries a state
        file's header (or is empty) is moved: anything else at the path (an
        operator's typo naming another file) is left in place, and then no
        original can be recorded (``StateUnwritable`` on every change) until
        someone moves it, because the next save would replace it.
        """
        self._entries = {}
        self._foreign = None
        if self._path is None:
            return ()
        try:
            text = self._read_checked(self._path, self._max_bytes)
            self._entries = self._parse(text)
        except FileNotFoundError:
            return ()
        except _InvalidStateFile as exc:
            if carries_state_header(self._path):
                return (self._quarantine(str(exc), move=not self._read_only),)
            return (self._leave_foreign(str(exc)),)
        return ()

    def _leave_foreign(self, reason: str) -> Record:
        assert self._path is not None
        self._foreign = reason
        return Record(
            RecordType.STATE_QUARANTINED,
            f"state file {self._path} is not trusted ({reason}) and is not a remediator state file, "
            "so it is left in place; no original can be recorded there, so changes of memory.high "
            "and vm.vfs_cache_pressure are refused until it is moved away or state_file names another path",
            result="left_in_place",
            extra={"STATE_FILE": str(self._path)},
        )

    @staticmethod
    def _read_checked(path: Path, max_bytes: int) -> str:
        # O_NONBLOCK: a FIFO planted in place of the file must not hang the start-up.
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno_mod.ELOOP:
                raise _InvalidStateFile("the state file is a symlink") from exc
            raise _InvalidStateFile(f"cannot be opened: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _InvalidStateFile("not a regular file")
            if st.st_uid != os.geteuid():
                raise _InvalidStateFile(f"owned by uid {st.st_uid}, not by us")
            if st.st_mode & 0o022:
                raise _InvalidStateFile(f"writable by others (mode {stat.S_IMODE(st.st_mode):04o})")
            if st.st_size > max_bytes:
                raise _InvalidStateFile(f"too large ({st.st_size} bytes, the limit is {max_bytes})")
            directory_problem = _directory_problem(path.parent)
            if directory_problem is not None:
                raise _InvalidStateFile(directory_problem)
            data = os.read(fd, max_bytes + 1)
        except OSError as exc:
            raise _InvalidStateFile(f"cannot be read: {exc.strerror}") from exc
        finally:
            os.close(fd)
        if len(data) > max_bytes:
            raise _InvalidStateFile("too large")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _InvalidStateFile("not UTF-8") from exc

    @staticmethod
    def _parse(text: str) -> Dict[StoreKey, OwnedValue]:
        try:
            model = StateFileModel.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise _InvalidStateFile(f"invalid at {where or 'top level'}: {first['msg']}") from exc
        entries: Dict[StoreKey, OwnedValue] = {}
        for index, raw in enumerate(model.entries):
            try:
                owned = owned_from_model(raw)
            except InvalidCgroupName as exc:
                raise _InvalidStateFile(f"entries.{index}: {exc}") from exc
            if owned.key in entries:
                raise _InvalidStateFile(f"entries.{index}: {owned.kind} {owned.name!r} recorded twice")
            entries[owned.key] = owned
        return entries

    def _quarantine(self, reason: str, move: bool) -> Record:
        assert self._path is not None
        path = self._path
        aside = self._quarantine_path(path)
        extra = {"STATE_FILE": str(path), "QUARANTINE_FILE": str(aside)}
        if not move:
            return Record(
                RecordType.STATE_QUARANTINED,
                f"state file {path} is not trusted ({reason}); it would be moved aside to {aside}, "
                "and the values it records will not be restored",
                result="quarantined",
                dry_run=True,
                extra=extra,
            )
        try:
            os.rename(path, aside)
        except OSError as exc:
            return Record(
                RecordType.STATE_QUARANTINED,
                f"state file {path} is not trusted ({reason}) and could not be moved aside "
                f"({exc.strerror}); the values it records will not be restored",
                result="quarantined",
                errno=errno_mod.errorcode.get(exc.errno or 0, ""),
                extra={"STATE_FILE": str(path)},
            )
        return Record(
            RecordType.STATE_QUARANTINED,
            f"state file {path} is not trusted ({reason}); moved aside to {aside}; "
            "the values it records will not be restored",
            result="quarantined",
            extra=extra,
        )

    @staticmethod
    def _quarantine_path(path: Path) -> Path:
        n = 1
        while True:
            candidate = path.with_name(f"{path.name}.quarantine.{n}")
            if not os.path.lexists(candidate):
                return candidate
            n += 1

    # ---- persisting -----------------------------------------------------------
    def _require(self, key: StoreKey) -> OwnedValue:
        entry = self._entries.get(key)
        if entry is None:
            raise KeyError(f"{key[0]} {key[1]!r} is not recorded")
        return entry

    def _commit(self, entries: Dict[StoreKey, OwnedValue]) -> None:
        """Persist ``entries`` (a read-only store does not), then adopt them; on failure nothing changes."""
        if self._path is not None and not self._read_only:
            if self._foreign is not None:
                raise StateUnwritable(
                    self._path,
                    f"not a remediator state file ({self._foreign}); left in place, "
                    "so no original is recorded",
                )
            if entries.keys() - self._entries.keys():
                self._check_room(self._path, entries, self._max_bytes)
            self._persist(self._path, entries)
        self._entries = entries

    @staticmethod
    def _check_room(path: Path, entries: Dict[StoreKey, OwnedValue], max_bytes: int) -> None:
        """Refuse a new entry unless every entry could reach its widest and the file still load.

        Checked where an entry is added only: updates and drops of recorded
        values must always go through, or a restore could not be confirmed.
        """
        widest = len(encode_entries({key: widest_form(value) for key, value in entries.items()}))
        if widest > max_bytes:
            raise StateFull(
                path,
                f"recording one more original ({len(entries)} values) could make the file "
                f"{widest} bytes, above the {max_bytes} its loader accepts; new values "
                "are refused until recorded ones are restored",
            )

    @staticmethod
    def _persist(path: Path, entries: Dict[StoreKey, OwnedValue]) -> None:
        data = encode_entries(entries)
        directory = path.parent
        tmp = directory / f".{path.name}.tmp.{os.getpid()}"
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory_problem = _directory_problem(directory)
            if directory_problem is not None:
                raise StateUnwritable(path, f"{directory_problem}; refusing to record originals there")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                # The rename is durable only once the directory is.
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StateUnwritable(path, exc.strerror or str(exc), exc.errno) from exc
