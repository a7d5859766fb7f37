"""Where audit records go: the systemd journal, or one escaped line on stderr.

The journal is the product's audit trail (``journalctl MESSAGE_ID=...``,
``REMEDIATOR_CGROUP=...``), so field names matter: journald silently drops a
field whose name is not ``[A-Z][A-Z0-9_]*`` (at most 64 characters, no leading
underscore), which would make a record vanish from every query that filters on
it. Names are therefore checked here; an invalid one raises in tests (strict)
and is skipped and counted in production.

Values are passed as fields, never formatted into a larger string: a cgroup
name is whatever the container runtime chose, so it may contain newlines or
terminal escapes. In MESSAGE (read by people in ``journalctl`` output) and on
stderr (read line by line by log shippers) they are escaped by
``remediator.text.escape_text`` (controls, line separators, bidi controls), so
one record is one line and no name can forge a second record.

Writers never raise: losing the journal (journald restarting) must not stop
remediation, so a failed send goes to stderr for that record and the journal
is tried again for the next one. libsystemd reports success when journald's
socket does not exist at all (no journald: a container, a rescue shell), so
the socket is probed at start and looked at before each send; while it is
unreachable, records go to stderr after one notice that says so.
"""

from __future__ import annotations

import enum
import errno as errno_mod
import json
import os
import re
import socket
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Protocol, TextIO, Tuple

from remediator.clock import Clock, SystemClock
from remediator.errors import RemediatorError
from remediator.records import PRIORITY_INFO, PRIORITY_WARNING, Record, presented
from remediator.text import escape_text

SYSLOG_IDENTIFIER = "remediator"
FIELD_PREFIX = "REMEDIATOR_"
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
# The writers' own notice: records change destination (the journal became unreachable, or is back).
# Written to stderr only (it is about the journal being unreachable), so it has no catalog entry.
LOG_TARGET_CHANGED_MESSAGE_ID = "e767ecc9b9ae480a9e606851c4a272ac"

# journald's rule for field names (journal-file.c: field_is_valid), which also
# reserves names starting with "_" for trusted fields it adds itself.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}\Z")

PRIORITY_NAMES = {
    0: "EMERG",
    1: "ALERT",
    2: "CRIT",
    3: "ERR",
    4: "WARNING",
    5: "NOTICE",
    6: "INFO",
    7: "DEBUG",
}

Fields = List[Tuple[str, str]]
JournalSend = Callable[..., object]


class InvalidFieldName(RemediatorError):
    """A journal field name journald would silently drop."""


class JournalUnavailable(RemediatorError):
    """The journal was asked for explicitly but systemd.journal cannot be imported."""


class RecordWriter(Protocol):
    def write(self, record: Record) -> None:
        """Emit one record; must not raise."""


def is_valid_field_name(name: str) -> bool:
    return _FIELD_NAME.match(name) is not None


def record_fields(record: Record) -> Fields:
    """The record as (journal field name, value) pairs, MESSAGE first.

    Shared by both writers so that a stderr line and a journal entry carry the
    same names. Empty fields are left out; DRY_RUN is always present so that
    audit-mode records can be selected (and excluded) by a query. The record
    is presented first (``remediator.records.presented``): a dry-run record is
    worded here, at the one place every writer goes through.
    """
    record = presented(record)
    fields: Fields = [
        ("MESSAGE", record.message),
        ("MESSAGE_ID", record.type.message_id),
        ("PRIORITY", str(record.effective_priority)),
    ]
    if record.policy:
        fields.append((FIELD_PREFIX + "POLICY", record.policy))
    if record.cgroup is not None:
        # The root cgroup is "" in records; "/" keeps the field present and readable.
        fields.append((FIELD_PREFIX + "CGROUP", record.cgroup or "/"))
    for name, value in (
        ("ACTION", record.action),
        ("RESULT", record.result),
        ("BEFORE", record.before),
        ("AFTER", record.after),
        ("ERRNO", record.errno),
    ):
        if value:
            # A str enum (Knob) as its value: str() of one is "Knob.RECLAIM", and journald gets str().
            fields.append((FIELD_PREFIX + name, value.value if isinstance(value, enum.Enum) else value))
    fields.append((FIELD_PREFIX + "DRY_RUN", "1" if record.dry_run else "0"))
    fields.extend((FIELD_PREFIX + key, value) for key, value in record.evidence.items())
    fields.extend((FIELD_PREFIX + key, value) for key, value in record.extra.items())
    return fields


# ---- escaping (stderr lines and MESSAGE) ----------------------------------------
# One function for every human output (remediator.text): controls, separators, bidi controls, and the
# backslash, so that escapes stay unambiguous and a stderr line parses back to exactly its fields.


def _quote_value(value: str) -> str:
    escaped = escape_text(value)
    if escaped == "" or any(c in escaped for c in ' "|='):
        return '"' + escaped.replace('"', '\\"') + '"'
    return escaped


def iso_time(wall: float) -> str:
    moment = datetime.fromtimestamp(wall, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ---- writers --------------------------------------------------------------------


def format_stderr_line(wall: float, priority: int, fields: Fields) -> str:
    """``<ISO time> <PRIORITY> <MESSAGE> | KEY=value ...``; ``fields`` start with MESSAGE."""
    message = fields[0][1]
    rest = " ".join(
        f"{name[len(FIELD_PREFIX) :] if name.startswith(FIELD_PREFIX) else name}={_quote_value(value)}"
        for name, value in fields[1:]
        if name != "PRIORITY"
    )
    # "|" is spelled \x7c in the message, so the first " | " always ends it: a cgroup
    # name in the message cannot start a forged field list ("x | MESSAGE_ID=...").
    shown = escape_text(message).replace("|", "\\x7c")
    return f"{iso_time(wall)} {PRIORITY_NAMES.get(priority, str(priority))} {shown} | {rest}"


def notice_fields(message: str, priority: int, extra: Mapping[str, str]) -> Fields:
    """The fields of the writers' own notice (``LOG_TARGET_CHANGED``), in record order."""
    fields: Fields = [
        ("MESSAGE", message),
        ("MESSAGE_ID", LOG_TARGET_CHANGED_MESSAGE_ID),
        ("PRIORITY", str(priority)),
    ]
    fields.extend((FIELD_PREFIX + key, value) for key, value in extra.items() if value)
    return fields


class _LineWriter:
    """One line per record on stderr (or a given stream); subclasses choose the format."""

    def __init__(self, stream: Optional[TextIO] = None, clock: Optional[Clock] = None) -> None:
        self._stream = stream
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.failed_writes = 0

    def format(self, record: Record) -> str:
        return self.format_fields(record.effective_priority, record_fields(record))

    def format_fields(self, priority: int, fields: Fields) -> str:
        raise NotImplementedError

    def write(self, record: Record) -> None:
        self._write_line(self.format(record))

    def notice(self, message: str, priority: int, extra: Mapping[str, str]) -> None:
        """A line of the writers' own (MESSAGE_ID ``LOG_TARGET_CHANGED``): where records go now, and why."""
        self._write_line(self.format_fields(priority, notice_fields(message, priority, extra)))

    def _write_line(self, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            # stderr closed or broken: there is nowhere left to say so.
            self.failed_writes += 1


class StderrWriter(_LineWriter):
    """``<ISO time> <PRIORITY> <MESSAGE> | KEY=value ...``, one line per record."""

    def format_fields(self, priority: int, fields: Fields) -> str:
        return format_stderr_line(self._clock.wall(), priority, fields)


class JsonLinesWriter(_LineWriter):
    """One JSON object per line on stderr, with the journal's field names.

    For containers and log shippers that want structured records without a
    journal, and for the real-kernel tests that read the daemon's records.
    json.dumps escapes control characters, so one record is always one line.
    """

    def format_fields(self, priority: int, fields: Fields) -> str:
        doc: Dict[str, str] = {
            "TIMESTAMP": iso_time(self._clock.wall()),
            "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        }
        for name, value in fields:
            # As in the journal: an evidence/extra key never shadows a standard field.
            doc.setdefault(name, value)
        return json.dumps(doc, ensure_ascii=True, sort_keys=False)


def journal_socket_problem(path: Path) -> Optional[str]:
    """None when journald's native socket at ``path`` takes a datagram; otherwise why it does not.

    libsystemd's ``sd_journal_send`` returns success when the socket does not
    exist (journal-send.c: "fail silently if the journal is not available"), so
    every record would vanish without an error: this is the only way to know.
    A connect() on a datagram socket reaches the receiver without sending
    anything: ENOENT (no journald), ECONNREFUSED (a stale socket nobody reads).
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(os.fsencode(path))
    except OSError as exc:
        return _describe_os_error(path, exc)
    finally:
        probe.close()
    return None


def _describe_os_error(path: Path, exc: OSError) -> str:
    name = errno_mod.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    reason = exc.strerror or str(exc)
    return f"{path}: {reason}" + (f" ({name})" if name else "")


class JournalWriter:
    """Records as native journal entries, with ``REMEDIATOR_*`` fields.

    When journald cannot be reached (its socket is absent, or a send fails)
    the record goes to ``fallback`` (stderr), and the first such record of an
    outage is preceded there by one ``LOG_TARGET_CHANGED`` notice saying why;
    the journal is tried again for the next record, and when it takes one a
    second notice says the records are back in the journal. ``socket_path`` is
    journald's socket, looked at before every send because libsystemd reports
    success when it is missing; None (a stand-in ``send`` in tests) never looks.
    With the real libsystemd send it defaults to ``JOURNAL_SOCKET``, which is
    also probed at construction so that an unreachable journal is said at start.
    """

    def __init__(
        self,
        send: Optional[JournalSend] = None,
        fallback: Optional[_LineWriter] = None,
        strict: bool = False,
        socket_path: Optional[Path] = None,
    ) -> None:
        if send is None:
            send = _journal_send()
            if send is None:
                raise JournalUnavailable("the journal needs the systemd Python module (systemd-python)")
            if socket_path is None:
                socket_path = JOURNAL_SOCKET
        self._send: JournalSend = send
        self._fallback: _LineWriter = fallback if fallback is not None else StderrWriter()
        self._strict = strict
        self._socket_path = socket_path
        self.dropped_fields = 0
        self.failed_sends = 0
        self.falling_back = False
        if socket_path is not None:
            problem = journal_socket_problem(socket_path)
            if problem is not None:
                self._fall_back(problem)

    def journal_fields(self, record: Record) -> Dict[str, str]:
        """The keyword arguments for ``systemd.journal.send`` (MESSAGE included)."""
        out: Dict[str, str] = {"SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER}
        for name, value in record_fields(record):
            if not is_valid_field_name(name):
                if self._strict:
                    raise InvalidFieldName(f"journal field name {name!r} would be dropped by journald")
                self.dropped_fields += 1
                continue
            if name in out:
                # An evidence/extra key shadowing a standard field: the standard one wins.
                if self._strict:
                    raise InvalidFieldName(f"journal field {name!r} given twice")
                self.dropped_fields += 1
                continue
            out[name] = escape_text(value) if name == "MESSAGE" else value
        return out

    def _socket_missing(self) -> Optional[str]:
        # One lstat per record (about a microsecond): the case libsystemd hides.
        if self._socket_path is None:
            return None
        try:
            st = os.lstat(self._socket_path)
        except OSError as exc:
            return _describe_os_error(self._socket_path, exc)
        if not stat.S_ISSOCK(st.st_mode):
            return f"{self._socket_path}: not a socket"
        return None

    def _fall_back(self, reason: str) -> None:
        if self.falling_back:
            return
        self.falling_back = True
        self._fallback.notice(
            f"journal unreachable ({reason}): records go to stderr until it takes one again",
            PRIORITY_WARNING,
            {"LOG_TARGET": "stderr", "REASON": reason},
        )

    def write(self, record: Record) -> None:
        fields = self.journal_fields(record)
        message = fields.pop("MESSAGE")
        problem = self._socket_missing()
        if problem is None:
            try:
                self._send(message, **fields)
            except OSError as exc:
                # journald gone or restarting, its socket buffer full: an outage.
                problem = _describe_os_error(self._socket_path or JOURNAL_SOCKET, exc)
            except Exception:
                # A value it refused: this record only; the journal itself is fine.
                self.failed_sends += 1
                self._fallback.write(record)
                return
            else:
                if self.falling_back:
                    self.falling_back = False
                    self._fallback.notice(
                        "journal reachable again: records go to the journal",
                        PRIORITY_INFO,
                        {"LOG_TARGET": "journal"},
                    )
                return
        self.failed_sends += 1
        self._fall_back(problem)
        self._fallback.write(record)


class CapturingWriter:
    """Keeps records in a list: for tests."""

    def __init__(self) -> None:
        self.records: List[Record] = []

    def write(self, record: Record) -> None:
        self.records.append(presented(record))  # as every writer shows it


# ---- choosing -------------------------------------------------------------------


def _journal_send() -> Optional[JournalSend]:
    """libsystemd's send, without the CODE_FILE, CODE_LINE and CODE_FUNC that
    ``systemd.journal.send`` adds from its caller's frame: every record said
    journal.py and the line of this module's send (issue 12). What a record
    means is in its MESSAGE_ID and REMEDIATOR_* fields, not in a line of code."""
    try:
        from systemd.journal import sendv
    except ImportError:
        return None

    def send(message: str, **fields: str) -> object:
        return sendv(f"MESSAGE={message}", *(f"{name}={value}" for name, value in fields.items()))

    return send


def make_writer(target: str, *, root: Path = Path("/"), stream: Optional[TextIO] = None) -> RecordWriter:
    """``auto`` | ``journal`` | ``stderr`` | ``json`` (JSON lines on stderr).

    ``root`` is where journald's socket is looked for (``<root>/run/systemd/journal/socket``;
    tests point it at a directory of their own); ``stream`` replaces stderr.
    auto picks the journal when systemd.journal imports and its socket takes a
    datagram; otherwise stderr, without a notice (that is what auto means).
    journal falls back to stderr, with one notice, while the socket is unreachable.
    """
    if target == "stderr":
        return StderrWriter(stream)
    if target == "json":
        return JsonLinesWriter(stream)
    socket_path = root / JOURNAL_SOCKET.relative_to("/")
    send = _journal_send()
    if target == "journal":
        if send is None:
            raise JournalUnavailable("log target 'journal' needs the systemd Python module (systemd-python)")
        return JournalWriter(send, fallback=StderrWriter(stream), socket_path=socket_path)
    if target != "auto":
        raise ValueError(f"unknown log target {target!r} (auto, journal, stderr or json)")
    if send is not None and journal_socket_problem(socket_path) is None:
        return JournalWriter(send, fallback=StderrWriter(stream), socket_path=socket_path)
    return StderrWriter(stream)


__all__ = [
    "FIELD_PREFIX",
    "JOURNAL_SOCKET",
    "LOG_TARGET_CHANGED_MESSAGE_ID",
    "SYSLOG_IDENTIFIER",
    "CapturingWriter",
    "InvalidFieldName",
    "JournalUnavailable",
    "JournalWriter",
    "JsonLinesWriter",
    "RecordWriter",
    "StderrWriter",
    "escape_text",  # re-exported for remediator.daemon.notify until it imports remediator.text itself
    "format_stderr_line",
    "is_valid_field_name",
    "iso_time",
    "journal_socket_problem",
    "make_writer",
    "notice_fields",
    "record_fields",
]
