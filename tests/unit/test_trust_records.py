"""Records cannot be forged: an untrusted string (a cgroup name chosen by a container runtime, a
systemd unit name with ``\\x2d`` escapes, a value read from a kernel file) stays inside its own field.

- journald: values are passed as fields, never formatted into another field;
- stderr: one record is one line, and the line parses back (message, then
  ``KEY=value`` pairs) into exactly the fields of the record;
- JSON lines: one record is one line, and json.loads gives back the exact values.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.clock import FakeClock
from remediator.daemon.executor import Executor
from remediator.daemon.journal import (
    FIELD_PREFIX,
    JournalWriter,
    JsonLinesWriter,
    StderrWriter,
    record_fields,
)
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.notify import Notifier
from remediator.daemon.service import Service
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Watcher
from remediator.kernel.capabilities import probe
from remediator.kernel.psi_trigger import TriggerCheck
from remediator.records import Knob, Record, RecordType
from remediator.settings import load_settings
from tests.fake_triggers import FakeTriggers
from tests.fakefs import FakeKernel

# Everything a hostile name could try: line breaks of every kind, terminal escapes,
# the stderr format's own separators, quotes, backslashes, systemd escapes, NUL.
HOSTILE_PIECES = [
    "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00", "\x1b[2J", "\x7f",
    " | ", "|", "=", '"', "\\", "\\x2d", "\\n", " MESSAGE_ID=", "PRIORITY=0", "é", "\U0001f600", "a", " ",
]  # fmt: skip
hostile_text = st.lists(st.sampled_from(HOSTILE_PIECES) | st.text(max_size=4), max_size=12).map("".join)
# Keys are the code's, not the attacker's: evidence and extra keys never collide with
# each other or with the standard fields (that case has its own test below).
evidence_key = st.from_regex(r"E_[A-Z0-9_]{0,20}", fullmatch=True)
extra_key = st.from_regex(r"X_[A-Z0-9_]{0,20}", fullmatch=True)


@st.composite
def hostile_records(draw: st.DrawFn) -> Record:
    return Record(
        RecordType.ACTION_APPLIED,
        message=draw(hostile_text),
        policy=draw(hostile_text),
        cgroup=draw(st.none() | hostile_text),
        action=draw(st.none() | st.sampled_from(Knob)),
        result=draw(hostile_text),
        before=draw(hostile_text),
        after=draw(hostile_text),
        errno=draw(hostile_text),
        evidence=draw(st.dictionaries(evidence_key, hostile_text, max_size=3)),
        extra=draw(st.dictionaries(extra_key, hostile_text, max_size=3)),
    )


# ---- a strict reader of the stderr format ------------------------------------------------

_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|(.))", re.DOTALL)
_NAMED = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}


def unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) or match.group(2):
            return chr(int(match.group(1) or match.group(2), 16))
        return _NAMED[match.group(3)]

    return _ESCAPE.sub(one, text)


def parse_stderr_line(line: str) -> Tuple[str, List[Tuple[str, str]]]:
    """(message, [(KEY, value), ...]) as a log shipper would read it: the message
    ends at the FIRST " | "; then KEY=value pairs, a value quoted when needed."""
    _time, _priority, rest = line.split(" ", 2)
    message, separator, fields_text = rest.partition(" | ")
    assert separator, line
    fields: List[Tuple[str, str]] = []
    i = 0
    while i < len(fields_text):
        equals = fields_text.index("=", i)
        key = fields_text[i:equals]
        i = equals + 1
        if fields_text.startswith('"', i):
            i += 1
            start = i
            while fields_text[i] != '"':
                i += 2 if fields_text[i] == "\\" else 1
            raw = fields_text[start:i]
            i += 1
        else:
            end = fields_text.find(" ", i)
            end = len(fields_text) if end < 0 else end
            raw = fields_text[i:end]
            i = end
        fields.append((key, unescape(raw)))
        if i < len(fields_text):
            assert fields_text[i] == " ", line
            i += 1
    return unescape(message), fields


def expected_stderr_fields(record: Record) -> List[Tuple[str, str]]:
    return [
        (name[len(FIELD_PREFIX) :] if name.startswith(FIELD_PREFIX) else name, value)
        for name, value in record_fields(record)[1:]
        if name != "PRIORITY"
    ]


@settings(max_examples=150, deadline=None)
@given(hostile_records())
def test_stderr_line_is_one_line_that_parses_back_to_exactly_the_records_fields(record: Record) -> None:
    line = StderrWriter(io.StringIO(), FakeClock()).format(record)

    assert len(line.splitlines()) == 1
    assert "\x1b" not in line and "\x00" not in line
    message, fields = parse_stderr_line(line)
    assert message == record.message
    assert fields == expected_stderr_fields(record)


@settings(max_examples=150, deadline=None)
@given(hostile_records())
def test_json_line_is_one_line_that_loads_back_to_the_exact_values(record: Record) -> None:
    line = JsonLinesWriter(io.StringIO(), FakeClock()).format(record)

    assert len(line.splitlines()) == 1
    document = json.loads(line)
    for name, value in record_fields(record):
        assert document[name] == value


@settings(max_examples=100, deadline=None)
@given(hostile_records())
def test_journal_fields_are_passed_as_fields_and_only_message_is_escaped(record: Record) -> None:
    sent: List[Tuple[str, Dict[str, str]]] = []
    JournalWriter(lambda message, **fields: sent.append((message, fields))).write(record)

    [(message, fields)] = sent
    assert len(message.splitlines()) <= 1
    assert fields["MESSAGE_ID"] == RecordType.ACTION_APPLIED.message_id
    assert fields["PRIORITY"] == str(RecordType.ACTION_APPLIED.priority)
    if record.cgroup:
        assert fields["REMEDIATOR_CGROUP"] == record.cgroup  # binary-safe in the journal, as is
    if record.result:
        assert fields["REMEDIATOR_RESULT"] == record.result
    else:
        assert "REMEDIATOR_RESULT" not in fields


def test_message_with_the_field_separator_cannot_inject_fields() -> None:
    # A cgroup named like the tail of a record: a reader that splits at the first " | "
    # must not find MESSAGE_ID=forged.
    hostile = "x.service | MESSAGE_ID=forged CGROUP=/ RESULT=restored"
    record = Record(RecordType.ACTION_APPLIED, f"reclaim from {hostile}", cgroup=hostile, result="applied")

    message, fields = parse_stderr_line(StderrWriter(io.StringIO(), FakeClock()).format(record))

    assert message == record.message
    assert dict(fields)["MESSAGE_ID"] == RecordType.ACTION_APPLIED.message_id
    assert dict(fields)["CGROUP"] == hostile
    assert [key for key, _ in fields].count("MESSAGE_ID") == 1


def test_extra_key_cannot_shadow_a_standard_field_in_json_lines() -> None:
    record = Record(RecordType.ACTION_APPLIED, "m", cgroup="a.service", extra={"CGROUP": "forged"})

    document = json.loads(JsonLinesWriter(io.StringIO(), FakeClock()).format(record))

    assert document["REMEDIATOR_CGROUP"] == "a.service"


class TeeWriter:
    """Counts records and writes each as a stderr line."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.stderr = StderrWriter(self.stream, FakeClock())
        self.records: List[Record] = []

    def write(self, record: Record) -> None:
        self.records.append(record)
        self.stderr.write(record)


def test_daemon_records_about_a_hostile_cgroup_stay_one_line_each(tmp_path: Path) -> None:
    # A unit name with systemd escapes, a carriage return, a terminal escape, a Unicode line
    # separator and the stderr separator: the daemon watches it, and every record stays one line.
    hostile = "system.slice/evil\\x2dname\r\x1b[2J\u2028 | MESSAGE_ID=forged.service"
    kernel = FakeKernel(tmp_path / "kernel")
    kernel.add_cgroup(hostile, current=1 << 30, max_bytes=2 << 30)
    policies = tmp_path / "policies.d"
    policies.mkdir()
    (policies / "web.yaml").write_text(
        'target: {kind: cgroups, include: ["system.slice/*.service"]}\n'
        "trigger: {pressure: full, stall_ms: 100, window_ms: 2000}\n"
        "actions: [{kind: reclaim}]\n"
    )
    settings_ = load_settings(
        None,
        False,
        {"cgroup_root": kernel.cgroup_root, "proc_root": kernel.proc_root, "policies_dir": policies,
         "state_file": tmp_path / "run" / "state.json"},
        environ={},
    )  # fmt: skip
    clock = FakeClock()
    triggers = FakeTriggers(kernel.roots)
    tee = TeeWriter()
    service = Service(
        settings=settings_, clock=clock, writer=tee, notifier=Notifier(environ={}),
        executor=Executor(KernelFiles.under(kernel.roots), StateStore(settings_.state_file), clock),
        watcher=Watcher(kernel.roots, clock, 2.0, arm=triggers.arm, poll_factory=triggers.poll_factory),
        capabilities=probe(kernel.roots, trigger_checker=lambda _p, _s: TriggerCheck(True, "", None)),
    )  # fmt: skip
    try:
        service.start()
        triggers.remove_cgroup(hostile)
        clock.advance(1)
        service.step()
    finally:
        service.watcher.close()
        triggers.close()

    about_it = [r for r in tee.records if r.cgroup == hostile]
    assert {r.type for r in about_it} >= {RecordType.WATCH_STARTED, RecordType.WATCH_ENDED}
    lines = tee.stream.getvalue().splitlines()
    assert len(lines) == len(tee.records)
    for line, record in zip(lines, tee.records):
        message, fields = parse_stderr_line(line)
        assert message == record.message
        assert fields == expected_stderr_fields(record)
