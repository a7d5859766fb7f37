"""The journal catalog explains every record the daemon writes (`journalctl -x`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from remediator.records import RecordType
from tests.packaging.host_tools import require_commands

CATALOG = Path(__file__).resolve().parents[2] / "systemd" / "remediator.catalog"
ENTRY_HEADER = re.compile(r"^-- ([0-9a-f]{32})$", re.MULTILINE)


def catalog_entries(text: str) -> Dict[str, str]:
    """MESSAGE_ID -> entry text (headers and body), as journalctl's catalog parser splits them."""
    parts = ENTRY_HEADER.split(text)
    entries: Dict[str, str] = {}
    for message_id, body in zip(parts[1::2], parts[2::2]):
        assert message_id not in entries, f"{message_id} has two catalog entries"
        entries[message_id] = body.strip("\n")
    return entries


def test_catalog_has_an_entry_for_every_record_type() -> None:
    entries = catalog_entries(CATALOG.read_text())
    missing = {kind.name: kind.message_id for kind in RecordType if kind.message_id not in entries}
    assert not missing, f"record types without a catalog entry (journalctl -x shows nothing): {missing}"


def test_catalog_has_no_entry_for_a_message_id_the_daemon_does_not_use() -> None:
    known = {kind.message_id for kind in RecordType}
    stray = sorted(set(catalog_entries(CATALOG.read_text())) - known)
    assert not stray, f"catalog entries for MESSAGE_IDs no RecordType has: {stray}"


def test_catalog_message_ids_are_what_journald_accepts() -> None:
    # 128-bit IDs, lower-case hex without dashes: an entry with another spelling is silently never shown.
    headers = [line for line in CATALOG.read_text().splitlines() if line.startswith("-- ")]
    assert headers
    bad = [line for line in headers if not ENTRY_HEADER.match(line)]
    assert not bad, f"malformed catalog headers: {bad}"


@pytest.mark.parametrize("kind", list(RecordType), ids=lambda kind: kind.name)
def test_every_catalog_entry_has_a_subject_a_support_pointer_and_an_explanation(kind: RecordType) -> None:
    entry = catalog_entries(CATALOG.read_text())[kind.message_id]
    headers, _, body = entry.partition("\n\n")
    fields = dict(line.split(": ", 1) for line in headers.splitlines())
    assert fields.get("Subject", "").strip(), f"{kind.name}: no Subject"
    assert fields.get("Defined-By") == "remediator", f"{kind.name}: Defined-By"
    assert fields.get("Support") == "man:remediator(8)", f"{kind.name}: Support"
    # What happened and why, and what the operator can do: more than a one-line restatement of the subject.
    assert len(body.split()) >= 25, f"{kind.name}: the explanation is too short: {body!r}"


def test_journalctl_indexes_the_catalog(tmp_path: Path) -> None:
    require_commands("journalctl")
    catalog_dir = tmp_path / "usr" / "lib" / "systemd" / "catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir / CATALOG.name)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True, capture_output=True)
    listed = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--list-catalog"], check=True, capture_output=True, text=True
    ).stdout
    indexed = {line.split()[0] for line in listed.splitlines() if line.strip()}
    missing = sorted(kind.name for kind in RecordType if kind.message_id not in indexed)
    assert not missing, f"journalctl did not index: {missing}"
