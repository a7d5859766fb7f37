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
stderr (read line by line by log shippers) control characters are escaped, so
one record is one line and no name can forge a second record.

Writers never raise: losing the journal (journald restarting) must not stop
remediation, so a failed send goes to stderr for that record and the journal
is tried again for the next one.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Protocol, TextIO, Tuple

from remediator.clock import Clock, SystemClock
from remediator.core.records import Record
from remediator.errors import RemediatorError

SYSLOG_IDENTIFIER = "remediator"
FIELD_PREFIX = "REMEDIATOR_"
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

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
    audit-mode records can be selected (and excluded) by a query.
    """
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
            fields.append((FIELD_PREFIX + name, value))
    fields.append((FIELD_PREFIX + "DRY_RUN", "1" if record.dry_run else "0"))
    fields.extend((FIELD_PREFIX + key, value) for key, value in record.evidence.items())
    fields.extend((FIELD_PREFIX + key, value) for key, value in record.extra.items())
    return fields


# ---- escaping (stderr lines and MESSAGE) ----------------------------------------

_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


# C0 and C1 controls, DEL, and the Unicode line/paragraph separators some
# viewers treat as newlines; plus the backslash, so that escapes stay unambiguous.
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_text(text: str) -> str:
    """``text`` with every control character spelled out (``\\n``, ``\\x1b``, ...)."""
    return _UNSAFE.sub(lambda m: _escape_char(m.group(0)), text)


def _quote_value(value: str) -> str:
    escaped = escape_text(value)
    if escaped == "" or any(c in escaped for c in ' "|='):
        return '"' + escaped.replace('"', '\\"') + '"'
    return escaped


def iso_time(wall: float) -> str:
    moment = datetime.fromtimestamp(wall, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ---- writers --------------------------------------------------------------------


class _LineWriter:
    """One line per record on stderr (or a given stream); subclasses choose the format."""

    def __init__(self, stream: Optional[TextIO] = None, clock: Optional[Clock] = None) -> None:
        self._stream = stream
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.failed_writes = 0

    def format(self, record: Record) -> str:
        raise NotImplementedError

    def write(self, record: Record) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except (OSError, ValueError):
            # stderr closed or broken: there is nowhere left to say so.
            self.failed_writes += 1


class StderrWriter(_LineWriter):
    """``<ISO time> <PRIORITY> <MESSAGE> | KEY=value ...``, one line per record."""

    def format(self, record: Record) -> str:
        fields = record_fields(record)
        message = fields[0][1]
        rest = " ".join(
            f"{name[len(FIELD_PREFIX) :] if name.startswith(FIELD_PREFIX) else name}={_quote_value(value)}"
            for name, value in fields[1:]
            if name != "PRIORITY"
        )
        priority = PRIORITY_NAMES.get(record.effective_priority, str(record.effective_priority))
        # "|" is spelled \x7c in the message, so the first " | " always ends it: a cgroup
        # name in the message cannot start a forged field list ("x | MESSAGE_ID=...").
        shown = escape_text(message).replace("|", "\\x7c")
        return f"{iso_time(self._clock.wall())} {priority} {shown} | {rest}"


class JsonLinesWriter(_LineWriter):
    """One JSON object per line on stderr, with the journal's field names.

    For containers and log shippers that want structured records without a
    journal, and for the real-kernel tests that read the daemon's records.
    json.dumps escapes control characters, so one record is always one line.
    """

    def format(self, record: Record) -> str:
        doc: Dict[str, str] = {
            "TIMESTAMP": iso_time(self._clock.wall()),
            "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        }
        for name, value in record_fields(record):
            # As in the journal: an evidence/extra key never shadows a standard field.
            doc.setdefault(name, value)
        return json.dumps(doc, ensure_ascii=True, sort_keys=False)


class JournalWriter:
    """Records as native journal entries, with ``REMEDIATOR_*`` fields."""

    def __init__(
        self,
        send: Optional[JournalSend] = None,
        fallback: Optional[RecordWriter] = None,
        strict: bool = False,
    ) -> None:
        if send is None:
            from systemd.journal import send as journal_send

            send = journal_send
        self._send: JournalSend = send
        self._fallback: RecordWriter = fallback if fallback is not None else StderrWriter()
        self._strict = strict
        self.dropped_fields = 0
        self.failed_sends = 0

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

    def write(self, record: Record) -> None:
        fields = self.journal_fields(record)
        message = fields.pop("MESSAGE")
        try:
            self._send(message, **fields)
        except Exception:
            # journald restarting, socket buffer full, a value it refused: this
            # record goes to stderr and the journal is tried again next time.
            self.failed_sends += 1
            self._fallback.write(record)


class CapturingWriter:
    """Keeps records in a list: for tests."""

    def __init__(self) -> None:
        self.records: List[Record] = []

    def write(self, record: Record) -> None:
        self.records.append(record)


# ---- choosing -------------------------------------------------------------------


def stderr_is_journal(environ: Mapping[str, str], stderr_fd: int = 2) -> bool:
    """Whether systemd connected our stderr to the journal (JOURNAL_STREAM=<dev>:<ino>)."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stderr_fd)
    except OSError:
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def _journal_send() -> Optional[JournalSend]:
    try:
        from systemd.journal import send
    except ImportError:
        return None
    journal_send: JournalSend = send
    return journal_send


def make_writer(
    target: str,
    *,
    environ: Optional[Mapping[str, str]] = None,
    journal_socket: Path = JOURNAL_SOCKET,
    stderr_fd: int = 2,
) -> RecordWriter:
    """``auto`` | ``journal`` | ``stderr`` | ``json`` (JSON lines on stderr).

    auto picks the journal when stderr is already connected to it or its
    socket exists, and systemd.journal imports; otherwise stderr.
    """
    if target == "stderr":
        return StderrWriter()
    if target == "json":
        return JsonLinesWriter()
    send = _journal_send()
    if target == "journal":
        if send is None:
            raise JournalUnavailable("log target 'journal' needs the systemd Python module (systemd-python)")
        return JournalWriter(send)
    if target != "auto":
        raise ValueError(f"unknown log target {target!r} (auto, journal, stderr or json)")
    env = environ if environ is not None else os.environ
    reachable = stderr_is_journal(env, stderr_fd) or os.path.exists(journal_socket)
    if send is not None and reachable:
        return JournalWriter(send)
    return StderrWriter()
