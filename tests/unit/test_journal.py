"""Record writers: journal fields, escaped stderr lines, and choosing between them."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from remediator.clock import FakeClock
from remediator.daemon.journal import (
    JOURNAL_SOCKET,
    LOG_TARGET_CHANGED_MESSAGE_ID,
    CapturingWriter,
    InvalidFieldName,
    JournalWriter,
    JsonLinesWriter,
    StderrWriter,
    journal_socket_problem,
    make_writer,
    record_fields,
)
from remediator.records import PRIORITY_DEBUG, Knob, Record, RecordType
from remediator.text import escape_text

APP = "system.slice/app.service"


class CapturedSend:
    """Stands in for systemd.journal.send: keeps (MESSAGE, fields) per call."""

    def __init__(self, fail_times: int = 0) -> None:
        self.calls: List[Tuple[str, Dict[str, Any]]] = []
        self.fail_times = fail_times

    def __call__(self, message: str, **fields: Any) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        self.calls.append((message, fields))


def applied_record(**overrides: Any) -> Record:
    values: Dict[str, Any] = {
        "type": RecordType.ACTION_APPLIED,
        "message": f"set memory.high of {APP} to 3.0 GiB",
        "policy": "cache-heavy",
        "cgroup": APP,
        "action": Knob.MEMORY_HIGH,
        "result": "applied",
        "before": "max",
        "after": "3221225472",
        "evidence": {"SOME_AVG10": "78.20", "MEMORY_CURRENT": "4294836224"},
        "extra": {"RECLAIM_ASKED_BYTES": "1"},
    }
    values.update(overrides)
    return Record(**values)


# ---- journal --------------------------------------------------------------------------


def test_journal_writer_sends_the_documented_fields() -> None:
    send = CapturedSend()
    JournalWriter(send, strict=True).write(applied_record())
    assert send.calls == [
        (
            f"set memory.high of {APP} to 3.0 GiB",
            {
                "SYSLOG_IDENTIFIER": "remediator",
                "MESSAGE_ID": RecordType.ACTION_APPLIED.message_id,
                "PRIORITY": "5",
                "REMEDIATOR_POLICY": "cache-heavy",
                "REMEDIATOR_CGROUP": APP,
                "REMEDIATOR_ACTION": "memory_high",
                "REMEDIATOR_RESULT": "applied",
                "REMEDIATOR_BEFORE": "max",
                "REMEDIATOR_AFTER": "3221225472",
                "REMEDIATOR_DRY_RUN": "0",
                "REMEDIATOR_SOME_AVG10": "78.20",
                "REMEDIATOR_MEMORY_CURRENT": "4294836224",
                "REMEDIATOR_RECLAIM_ASKED_BYTES": "1",
            },
        )
    ]


def test_journal_writer_leaves_out_empty_fields_and_marks_dry_run() -> None:
    send = CapturedSend()
    JournalWriter(send, strict=True).write(
        Record(RecordType.DAEMON_STARTED, "starting", dry_run=True, priority=PRIORITY_DEBUG)
    )
    (_, fields) = send.calls[0]
    assert fields["REMEDIATOR_DRY_RUN"] == "1"
    assert fields["PRIORITY"] == "7"
    assert not {"REMEDIATOR_POLICY", "REMEDIATOR_CGROUP", "REMEDIATOR_ERRNO"} & set(fields)


def test_root_cgroup_is_sent_as_slash() -> None:
    send = CapturedSend()
    JournalWriter(send, strict=True).write(applied_record(cgroup=""))
    assert send.calls[0][1]["REMEDIATOR_CGROUP"] == "/"


@pytest.mark.parametrize("key", ["lower", "HAS-DASH", "SP ACE", "X" * 54, "ÜMLAUT", "NL\nX"])
def test_invalid_field_names_raise_in_strict_mode(key: str) -> None:
    # Checked on the whole name journald sees: REMEDIATOR_<KEY>, at most 64 characters.
    with pytest.raises(InvalidFieldName):
        JournalWriter(CapturedSend(), strict=True).write(applied_record(extra={key: "v"}))


def test_invalid_field_names_are_skipped_and_counted_in_production() -> None:
    send = CapturedSend()
    writer = JournalWriter(send)
    writer.write(applied_record(extra={"bad-name": "v", "GOOD": "w"}))
    (_, fields) = send.calls[0]
    assert fields["REMEDIATOR_GOOD"] == "w"
    assert not any("bad" in name.lower() for name in fields)
    assert writer.dropped_fields == 1


def test_extra_key_cannot_shadow_a_standard_field() -> None:
    send = CapturedSend()
    writer = JournalWriter(send)
    writer.write(applied_record(extra={"RESULT": "forged"}))
    assert send.calls[0][1]["REMEDIATOR_RESULT"] == "applied"
    assert writer.dropped_fields == 1


def test_hostile_cgroup_name_is_a_raw_field_and_an_escaped_message() -> None:
    hostile = "evil\nMESSAGE_ID=forged\x1b[2J.service"
    send = CapturedSend()
    JournalWriter(send, strict=True).write(applied_record(cgroup=hostile, message=f"reclaim from {hostile}"))
    (message, fields) = send.calls[0]
    assert fields["REMEDIATOR_CGROUP"] == hostile  # journald stores it binary-safe, as is
    assert "\n" not in message and "\x1b" not in message
    assert message == "reclaim from evil\\nMESSAGE_ID=forged\\x1b[2J.service"
    assert fields["MESSAGE_ID"] == RecordType.ACTION_APPLIED.message_id


def test_failed_journal_send_goes_to_stderr_and_the_journal_is_retried() -> None:
    send = CapturedSend(fail_times=1)
    stream = io.StringIO()
    writer = JournalWriter(send, fallback=StderrWriter(stream, FakeClock()))
    writer.write(applied_record(result="applied"))
    writer.write(applied_record(result="partial"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # the notice, the failed record, the notice that the journal is back
    assert "journal unreachable" in lines[0] and "Connection refused (ECONNREFUSED)" in lines[0]
    assert "RESULT=applied" in lines[1]
    assert "journal reachable again" in lines[2]
    assert [fields["REMEDIATOR_RESULT"] for _, fields in send.calls] == ["partial"]
    assert writer.failed_sends == 1


# ---- an unreachable journal (libsystemd reports success when its socket is missing) --------------


@pytest.fixture
def short_root() -> Iterator[Path]:
    """A root for run/systemd/journal/socket whose path fits in sun_path (108 bytes; pytest's are long)."""
    root = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    (root / "run/systemd/journal").mkdir(parents=True)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def bind_journal_socket(root: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(root / "run/systemd/journal/socket"))
    return listener


def notices(text: str) -> List[str]:
    return [line for line in text.splitlines() if f"MESSAGE_ID={LOG_TARGET_CHANGED_MESSAGE_ID}" in line]


def test_journal_target_without_journald_says_so_once_at_start_and_writes_records_to_stderr(
    short_root: Path,
) -> None:
    stream = io.StringIO()
    writer = make_writer("journal", root=short_root, stream=stream)
    assert isinstance(writer, JournalWriter) and writer.falling_back
    said = notices(stream.getvalue())
    assert len(said) == 1, "the notice comes at start, before any record"
    socket_path = short_root / "run/systemd/journal/socket"
    assert f"journal unreachable ({socket_path}: No such file or directory (ENOENT))" in said[0]
    assert " WARNING " in said[0] and "LOG_TARGET=stderr" in said[0]
    writer.write(applied_record(result="applied"))
    writer.write(applied_record(result="partial"))
    lines = stream.getvalue().splitlines()
    assert len(notices(stream.getvalue())) == 1
    assert ["RESULT=applied" in lines[1], "RESULT=partial" in lines[2]] == [True, True]


def test_records_go_to_stderr_when_the_journal_socket_disappears_and_return_when_it_is_back(
    short_root: Path,
) -> None:
    send = CapturedSend()  # like libsystemd: succeeds whether or not the socket is there
    stream = io.StringIO()
    listener = bind_journal_socket(short_root)
    socket_path = short_root / "run/systemd/journal/socket"
    writer = JournalWriter(send, fallback=StderrWriter(stream, FakeClock()), socket_path=socket_path)
    writer.write(applied_record(result="applied"))
    assert stream.getvalue() == "" and len(send.calls) == 1

    listener.close()
    socket_path.unlink()
    writer.write(applied_record(result="partial"))
    writer.write(applied_record(result="failed"))
    assert len(send.calls) == 1, "nothing is handed to a send that would drop it silently"
    lines = stream.getvalue().splitlines()
    assert len(notices(stream.getvalue())) == 1 and "journal unreachable" in lines[0]
    assert "RESULT=partial" in lines[1] and "RESULT=failed" in lines[2]

    listener = bind_journal_socket(short_root)
    try:
        writer.write(applied_record(result="restored"))
    finally:
        listener.close()
    assert [fields["REMEDIATOR_RESULT"] for _, fields in send.calls] == ["applied", "restored"]
    last = stream.getvalue().splitlines()[-1]
    assert "journal reachable again" in last and "LOG_TARGET=journal" in last


def test_a_stale_journal_socket_nobody_reads_is_unreachable(short_root: Path) -> None:
    socket_path = short_root / "run/systemd/journal/socket"
    bind_journal_socket(short_root).close()  # the file stays, nobody receives
    assert socket_path.exists()
    problem = journal_socket_problem(socket_path)
    assert problem == f"{socket_path}: Connection refused (ECONNREFUSED)"


def test_auto_picks_the_journal_only_when_its_socket_takes_a_datagram(short_root: Path) -> None:
    assert isinstance(make_writer("auto", root=short_root), StderrWriter)
    (short_root / "run/systemd/journal/socket").touch()  # a file, not a socket
    assert isinstance(make_writer("auto", root=short_root), StderrWriter)
    (short_root / "run/systemd/journal/socket").unlink()
    listener = bind_journal_socket(short_root)
    try:
        writer = make_writer("auto", root=short_root)
    finally:
        listener.close()
    assert isinstance(writer, JournalWriter) and not writer.falling_back


def test_a_record_the_journal_refuses_goes_to_stderr_without_an_outage_notice() -> None:
    def refuse(message: str, **fields: Any) -> None:
        raise ValueError("embedded null byte")

    stream = io.StringIO()
    writer = JournalWriter(refuse, fallback=StderrWriter(stream, FakeClock()))
    writer.write(applied_record())
    assert notices(stream.getvalue()) == [] and "RESULT=applied" in stream.getvalue()
    assert writer.failed_sends == 1 and not writer.falling_back


# ---- stderr ---------------------------------------------------------------------------


def test_stderr_line_has_time_priority_message_and_fields() -> None:
    stream = io.StringIO()
    StderrWriter(stream, FakeClock(start=0.25, wall_offset=1_700_000_000.0)).write(applied_record())
    assert stream.getvalue() == (
        f"2023-11-14T22:13:20.250Z NOTICE set memory.high of {APP} to 3.0 GiB | "
        f"MESSAGE_ID={RecordType.ACTION_APPLIED.message_id} POLICY=cache-heavy CGROUP={APP} "
        "ACTION=memory_high RESULT=applied BEFORE=max AFTER=3221225472 DRY_RUN=0 SOME_AVG10=78.20 "
        "MEMORY_CURRENT=4294836224 RECLAIM_ASKED_BYTES=1\n"
    )


def test_stderr_escapes_newline_and_escape_in_a_cgroup_name() -> None:
    hostile = "a\nb\x1b[31mc.service"
    stream = io.StringIO()
    StderrWriter(stream, FakeClock()).write(applied_record(cgroup=hostile, message=f"reclaim from {hostile}"))
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\x1b" not in text
    assert "reclaim from a\\nb\\x1b[31mc.service |" in text
    assert "CGROUP=a\\nb\\x1b[31mc.service " in text


def test_stderr_quotes_values_with_spaces_so_fields_stay_separable() -> None:
    stream = io.StringIO()
    StderrWriter(stream, FakeClock()).write(applied_record(extra={"NOTE": 'two words | "x" k=v'}))
    assert 'NOTE="two words | \\"x\\" k=v"' in stream.getvalue()


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("back\\slash", "back\\\\slash"),
        ("tab\there", "tab\\there"),
        ("cr\r", "cr\\r"),
        ("nul\0", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85", "c1\\x85"),
        ("ls\u2028", "ls\\u2028"),
    ],
)
def test_escape_text_spells_out_every_control_character(raw: str, escaped: str) -> None:
    assert escape_text(raw) == escaped


def test_stderr_writer_survives_a_closed_stream() -> None:
    stream = io.StringIO()
    stream.close()
    writer = StderrWriter(stream, FakeClock())
    writer.write(applied_record())
    assert writer.failed_writes == 1


def test_capturing_writer_keeps_records_in_order() -> None:
    writer = CapturingWriter()
    records = [applied_record(result="applied"), applied_record(result="partial")]
    for r in records:
        writer.write(r)
    assert writer.records == records


# ---- choosing a writer -----------------------------------------------------------------


def test_valid_field_names_pass_at_the_length_limit() -> None:
    send = CapturedSend()
    JournalWriter(send, strict=True).write(applied_record(extra={"X" * 53: "v"}))
    assert send.calls[0][1]["REMEDIATOR_" + "X" * 53] == "v"


def test_explicit_targets_and_unknown_ones(short_root: Path) -> None:
    assert isinstance(make_writer("stderr"), StderrWriter)
    assert isinstance(make_writer("json"), JsonLinesWriter)
    assert isinstance(make_writer("journal", root=short_root, stream=io.StringIO()), JournalWriter)
    with pytest.raises(ValueError):
        make_writer("syslog")


@pytest.mark.skipif(
    not JOURNAL_SOCKET.exists() or shutil.which("journalctl") is None,
    reason="journald is not reachable on this machine (no /run/systemd/journal/socket or journalctl)",
)
def test_records_reach_the_real_journal_with_their_fields() -> None:
    marker = uuid.uuid4().hex.upper()
    JournalWriter(strict=True).write(applied_record(extra={"TEST_MARKER": marker}))
    out = subprocess.run(
        ["journalctl", "--no-pager", "-o", "export", f"REMEDIATOR_TEST_MARKER={marker}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    if not out:
        pytest.skip("the entry was sent but this user cannot read it back from the journal")
    assert f"REMEDIATOR_CGROUP={APP}" in out
    assert f"MESSAGE_ID={RecordType.ACTION_APPLIED.message_id}" in out
    assert "SYSLOG_IDENTIFIER=remediator" in out


# A stand-in journald: in a private mount namespace, a tmpfs over /run holds a
# datagram socket where the real systemd.journal.send (libsystemd) delivers.
_STAND_IN_JOURNALD = r"""
import json, socket, struct, sys
from remediator.records import Record, RecordType
from remediator.daemon.journal import JournalWriter
import os
os.makedirs("/run/systemd/journal")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
hostile = "evil\nMESSAGE_ID=forged\x1b[2J.service"
JournalWriter(strict=True).write(Record(
    RecordType.ACTION_APPLIED, "reclaim from " + hostile, policy="p", cgroup=hostile,
    result="applied", evidence={"SOME_AVG10": "78.20"},
))
data = sock.recv(1 << 20)
fields = {}
while data:
    line, sep, rest = data.partition(b"\n")
    if b"=" in line:
        key, _, value = line.partition(b"=")
        data = rest
    else:  # binary-safe form: KEY\n<le64 length><value>\n
        key = line
        (size,) = struct.unpack("<Q", rest[:8])
        value, data = rest[8:8 + size], rest[8 + size + 1:]
    fields.setdefault(key.decode(), []).append(value.decode())
json.dump(fields, sys.stdout)
"""


def test_real_journal_send_delivers_fields_binary_safe_to_a_stand_in_journald() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    repo = Path(__file__).resolve().parents[2]
    shell = 'mount -t tmpfs tmpfs /run && exec "$0" -c "$1"'
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, sys.executable, _STAND_IN_JOURNALD],
        capture_output=True,
        text=True,
        cwd=repo,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"no private mount namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    fields = json.loads(proc.stdout)
    hostile = "evil\nMESSAGE_ID=forged\x1b[2J.service"
    assert fields["REMEDIATOR_CGROUP"] == [hostile]
    assert fields["MESSAGE"] == ["reclaim from evil\\nMESSAGE_ID=forged\\x1b[2J.service"]
    assert fields["MESSAGE_ID"] == [RecordType.ACTION_APPLIED.message_id]  # not forged
    assert fields["SYSLOG_IDENTIFIER"] == ["remediator"]
    assert fields["PRIORITY"] == ["5"]
    assert fields["REMEDIATOR_SOME_AVG10"] == ["78.20"]
    assert fields["REMEDIATOR_DRY_RUN"] == ["0"]


def test_json_lines_writer_keeps_one_record_per_line_with_journal_field_names() -> None:
    stream = io.StringIO()
    writer = JsonLinesWriter(stream, FakeClock())
    writer.write(
        Record(
            RecordType.ACTION_APPLIED,
            "reclaim 1.0 MiB from evil\nname",
            policy="p",
            cgroup="a\nb\x1b[31m",
            action=Knob.RECLAIM,
            evidence={"MEMORY_CURRENT": "42"},
        )
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["MESSAGE"] == "reclaim 1.0 MiB from evil\nname"
    assert doc["REMEDIATOR_CGROUP"] == "a\nb\x1b[31m"
    assert doc["MESSAGE_ID"] == RecordType.ACTION_APPLIED.message_id
    assert doc["REMEDIATOR_MEMORY_CURRENT"] == "42"
    assert doc["REMEDIATOR_DRY_RUN"] == "0"
    assert doc["SYSLOG_IDENTIFIER"] == "remediator"


# ---- issue 12, item 18: no code location of the writer on every record ------------------------------


def test_journal_records_carry_no_code_location_of_the_writer(
    short_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # systemd.journal.send adds CODE_FILE/CODE_LINE/CODE_FUNC of its caller: every record said
    # ".../journal.py CODE_LINE=244", which is where it was sent, not where it was decided.
    journal = pytest.importorskip("systemd.journal")
    sent: List[Tuple[str, ...]] = []
    monkeypatch.setattr(journal, "sendv", lambda *lines: sent.append(lines))
    listener = bind_journal_socket(short_root)
    try:
        writer = make_writer("journal", root=short_root, stream=io.StringIO())
        writer.write(applied_record())
    finally:
        listener.close()

    (lines,) = sent
    assert lines[0] == f"MESSAGE=set memory.high of {APP} to 3.0 GiB"
    assert f"MESSAGE_ID={RecordType.ACTION_APPLIED.message_id}" in lines
    assert f"REMEDIATOR_CGROUP={APP}" in lines
    assert [line for line in lines if line.startswith("CODE_")] == []


def test_a_dry_run_record_is_worded_at_the_writer_and_carries_no_figures_of_work_not_done() -> None:
    # The executor and the service hand over the enforcing words with dry_run set (issue 11 item 3).
    record = Record(
        RecordType.ACTION_APPLIED,
        "reclaim 512.0 MiB of page cache from system.slice/app.service",
        policy="services-cache",
        cgroup="system.slice/app.service",
        action=Knob.RECLAIM,
        result="applied",
        dry_run=True,
        extra={
            "RECLAIM_ASKED_BYTES": "536870912",
            "RECLAIM_REQUESTED_BYTES": "536870912",
            "RECLAIM_COMPLETED_BYTES": "536870912",
            "WRITTEN_MONOTONIC_US": "1000",
            "RUNG": "0",
        },
    )
    fields = dict(record_fields(record))
    assert fields["MESSAGE"] == "would reclaim 512.0 MiB of page cache from system.slice/app.service"
    assert fields["REMEDIATOR_RESULT"] == "would"
    assert fields["REMEDIATOR_DRY_RUN"] == "1"
    assert fields["REMEDIATOR_RECLAIM_ASKED_BYTES"] == "536870912"  # the plan is the same in both modes
    for work in ("RECLAIM_REQUESTED_BYTES", "RECLAIM_COMPLETED_BYTES", "WRITTEN_MONOTONIC_US"):
        assert "REMEDIATOR_" + work not in fields
    enforcing = dict(record_fields(replace(record, dry_run=False)))
    assert enforcing["REMEDIATOR_RECLAIM_COMPLETED_BYTES"] == "536870912"
    assert enforcing["MESSAGE"] == record.message
