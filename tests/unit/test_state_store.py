"""The state store: write-ahead originals, atomic persistence, strict loading."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, List

import pytest

from remediator.daemon.state_schema import KIND_MEMORY_HIGH, KIND_SYSCTL, SCHEMA_VERSION, PendingWrite
from remediator.daemon.state_store import StateFull, StateStore, StateUnwritable
from remediator.records import RecordType

APP = "system.slice/app.service"
WALL = 1_700_000_000.0


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "lib" / "remediator" / "state.json"


def on_disk(path: Path) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(path.read_text())
    return data


def good_entry(**overrides: Any) -> Dict[str, Any]:
    entry: Dict[str, Any] = {
        "kind": "memory_high",
        "cgroup": APP,
        "original": "max",
        "ours": 3221225472,
        "pending": None,
        "policy": "cache-heavy",
        "recorded_at": WALL,
    }
    entry.update(overrides)
    return entry


def write_state(path: Path, entries: List[Dict[str, Any]], version: Any = SCHEMA_VERSION) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps({"schema_version": version, "entries": entries}))
    path.chmod(0o600)


def test_record_original_is_on_disk_when_it_returns(state_path: Path) -> None:
    store = StateStore(state_path)
    store.record_original(KIND_MEMORY_HIGH, APP, None, "cache-heavy", WALL)
    assert on_disk(state_path) == {
        "schema_version": 1,
        "entries": [good_entry(ours="max")],
    }


def test_record_original_keeps_the_first_original(state_path: Path) -> None:
    store = StateStore(state_path)
    store.record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)
    store.update_ours(KIND_MEMORY_HIGH, APP, 3 << 30)
    again = store.record_original(KIND_MEMORY_HIGH, APP, 3 << 30, "p", WALL + 60)
    assert again.original is None
    reloaded = StateStore(state_path)
    assert reloaded.load() == ()
    entry = reloaded.get(KIND_MEMORY_HIGH, APP)
    assert entry is not None
    assert (entry.original, entry.ours, entry.recorded_at) == (None, 3 << 30, WALL)


def test_directory_is_private_and_file_is_0600(state_path: Path) -> None:
    StateStore(state_path).record_original(KIND_SYSCTL, "vfs_cache_pressure", 100, "node", WALL)
    assert stat.S_IMODE(state_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(state_path.stat().st_mode) == 0o600


def test_record_and_begin_write_persists_the_original_and_the_announcement_at_once(state_path: Path) -> None:
    store = StateStore(state_path)
    store.record_and_begin_write(KIND_MEMORY_HIGH, APP, None, "p", WALL, 3 << 30)
    fresh = StateStore(state_path)
    assert fresh.load() == ()
    (first,) = fresh.entries()
    assert (first.original, first.ours, first.pending) == (None, None, PendingWrite(3 << 30))
    store.update_ours(KIND_MEMORY_HIGH, APP, 3 << 30)
    # An owned value keeps its first original: the second announcement only adds the pending value.
    store.record_and_begin_write(KIND_MEMORY_HIGH, APP, 3 << 30, "p", WALL + 60, 2 << 30)
    reloaded = StateStore(state_path)
    assert reloaded.load() == ()
    (second,) = reloaded.entries()
    assert (second.original, second.ours, second.pending, second.recorded_at) == (
        None,
        3 << 30,
        PendingWrite(2 << 30),
        WALL,
    )


def test_persisting_leaves_no_temporary_files(state_path: Path) -> None:
    store = StateStore(state_path)
    store.record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)
    store.begin_write(KIND_MEMORY_HIGH, APP, 1 << 30)
    store.update_ours(KIND_MEMORY_HIGH, APP, 1 << 30)
    assert sorted(p.name for p in state_path.parent.iterdir()) == ["state.json"]


def test_entries_round_trip_through_the_file(state_path: Path) -> None:
    store = StateStore(state_path)
    store.record_original(KIND_MEMORY_HIGH, APP, 8 << 30, "p", WALL)
    store.begin_write(KIND_MEMORY_HIGH, APP, None)
    store.record_original(KIND_SYSCTL, "vfs_cache_pressure", 100, "node", WALL + 1)
    store.update_ours(KIND_SYSCTL, "vfs_cache_pressure", 200)
    reloaded = StateStore(state_path)
    assert reloaded.load() == ()
    assert reloaded.entries() == store.entries()
    mh = reloaded.get(KIND_MEMORY_HIGH, APP)
    assert mh is not None
    assert mh.pending == PendingWrite(None)
    assert mh.is_ours(None) and mh.is_ours(8 << 30)


def test_drop_forgets_the_entry_on_disk(state_path: Path) -> None:
    store = StateStore(state_path)
    store.record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)
    store.drop(KIND_MEMORY_HIGH, APP)
    assert on_disk(state_path)["entries"] == []
    assert store.entries() == ()


def test_cgroup_names_are_stored_in_canonical_form(state_path: Path) -> None:
    store = StateStore(state_path)
    store.record_original(KIND_MEMORY_HIGH, "/" + APP + "/", None, "p", WALL)
    assert store.get(KIND_MEMORY_HIGH, APP) is not None
    assert on_disk(state_path)["entries"][0]["cgroup"] == APP


@pytest.mark.parametrize(
    ("kind", "name"),
    [(KIND_SYSCTL, "drop_caches"), (KIND_SYSCTL, "swappiness"), ("memory_max", APP), (KIND_MEMORY_HIGH, "")],
)
def test_values_remediator_never_owns_cannot_be_recorded(state_path: Path, kind: str, name: str) -> None:
    with pytest.raises(ValueError):
        StateStore(state_path).record_original(kind, name, 1, "p", WALL)
    assert not state_path.exists()


def test_failed_persist_raises_state_unwritable_and_changes_nothing(
    state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(state_path)
    store.record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)
    before = state_path.read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StateUnwritable) as info:
        store.record_original(KIND_SYSCTL, "vfs_cache_pressure", 100, "node", WALL)
    assert info.value.errno_name == "ENOSPC"
    assert store.get(KIND_SYSCTL, "vfs_cache_pressure") is None
    assert state_path.read_bytes() == before
    assert sorted(p.name for p in state_path.parent.iterdir()) == ["state.json"]


def test_store_whose_directory_cannot_be_created_is_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = StateStore(blocker / "state.json")
    with pytest.raises(StateUnwritable):
        store.record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)
    assert store.entries() == ()


def test_missing_file_is_an_empty_store(state_path: Path) -> None:
    store = StateStore(state_path)
    assert store.load() == ()
    assert store.entries() == ()


def test_a_read_only_store_keeps_changes_in_memory_and_never_touches_the_disk(tmp_path: Path) -> None:
    state_path = tmp_path / "run" / "state.json"
    store = StateStore.read_only(state_path)
    store.record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)
    store.update_ours(KIND_MEMORY_HIGH, APP, 1 << 30)
    owned = store.get(KIND_MEMORY_HIGH, APP)
    assert owned is not None and owned.ours == 1 << 30
    assert list(tmp_path.iterdir()) == []
    assert store.load() == ()  # nothing to load, and the view starts over


HOSTILE_OR_CORRUPT = {
    "not json": '{"entries": [',
    "wrong schema version": json.dumps({"schema_version": 2, "entries": []}),
    "schema version as text": json.dumps({"schema_version": "1", "entries": []}),
    "unknown kind": json.dumps({"schema_version": 1, "entries": [good_entry(kind="memory_max")]}),
    "sysctl not owned": json.dumps(
        {
            "schema_version": 1,
            "entries": [
                {
                    "kind": "sysctl",
                    "sysctl": "swappiness",
                    "original": 60,
                    "ours": 0,
                    "policy": "p",
                    "recorded_at": WALL,
                }
            ],
        }
    ),
    "escaping cgroup": json.dumps({"schema_version": 1, "entries": [good_entry(cgroup="../../etc")]}),
    "absolute cgroup": json.dumps({"schema_version": 1, "entries": [good_entry(cgroup="/system.slice/a")]}),
    "dot-dot inside": json.dumps({"schema_version": 1, "entries": [good_entry(cgroup="a/../b")]}),
    "newline in cgroup": json.dumps({"schema_version": 1, "entries": [good_entry(cgroup="a\nb")]}),
    "root cgroup": json.dumps({"schema_version": 1, "entries": [good_entry(cgroup="")]}),
    "negative value": json.dumps({"schema_version": 1, "entries": [good_entry(original=-1)]}),
    "huge value": json.dumps({"schema_version": 1, "entries": [good_entry(ours=2**64)]}),
    "bool value": json.dumps({"schema_version": 1, "entries": [good_entry(ours=True)]}),
    "number as text": json.dumps({"schema_version": 1, "entries": [good_entry(original="1024")]}),
    "float value": json.dumps({"schema_version": 1, "entries": [good_entry(original=1.5)]}),
    "nan time": json.dumps({"schema_version": 1, "entries": [good_entry(recorded_at=float("nan"))]}),
    "extra field": json.dumps({"schema_version": 1, "entries": [good_entry(command="rm -rf /")]}),
    "duplicate entry": json.dumps({"schema_version": 1, "entries": [good_entry(), good_entry(ours=1)]}),
    "sysctl too large": json.dumps(
        {
            "schema_version": 1,
            "entries": [
                {
                    "kind": "sysctl",
                    "sysctl": "vfs_cache_pressure",
                    "original": 2**40,
                    "ours": 1,
                    "policy": "p",
                    "recorded_at": WALL,
                }
            ],
        }
    ),
}


@pytest.mark.parametrize("content", list(HOSTILE_OR_CORRUPT.values()), ids=list(HOSTILE_OR_CORRUPT))
def test_invalid_state_file_is_quarantined_and_not_trusted(state_path: Path, content: str) -> None:
    write_state(state_path, [])
    state_path.write_text(content)
    store = StateStore(state_path)
    records = store.load()
    assert [r.type for r in records] == [RecordType.STATE_QUARANTINED]
    assert store.entries() == ()
    assert not state_path.exists()
    aside = state_path.with_name("state.json.quarantine.1")
    assert aside.read_text() == content
    assert records[0].extra["QUARANTINE_FILE"] == str(aside)


def test_quarantine_never_overwrites_an_earlier_quarantine(state_path: Path) -> None:
    for attempt in range(2):
        write_state(state_path, [good_entry(cgroup="../x")])
        state_path.write_text(state_path.read_text() + " " * attempt)
        StateStore(state_path).load()
    assert state_path.with_name("state.json.quarantine.1").exists()
    assert state_path.with_name("state.json.quarantine.2").exists()


def test_state_file_writable_by_others_is_quarantined(state_path: Path) -> None:
    write_state(state_path, [good_entry()])
    state_path.chmod(0o666)
    store = StateStore(state_path)
    records = store.load()
    assert [r.type for r in records] == [RecordType.STATE_QUARANTINED]
    assert "writable by others" in records[0].message
    assert store.entries() == ()


def test_state_file_that_is_a_symlink_is_quarantined(state_path: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"schema_version": 1, "entries": [good_entry()]}))
    elsewhere.chmod(0o600)
    state_path.parent.mkdir(parents=True)
    os.symlink(elsewhere, state_path)
    store = StateStore(state_path)
    assert [r.type for r in store.load()] == [RecordType.STATE_QUARANTINED]
    assert store.entries() == ()
    assert elsewhere.exists()


def test_load_without_quarantine_reports_but_leaves_the_file(state_path: Path) -> None:
    write_state(state_path, [good_entry(cgroup="../../etc")])
    before = state_path.read_bytes()
    records = StateStore.read_only(state_path).load()
    assert [r.type for r in records] == [RecordType.STATE_QUARANTINED]
    assert records[0].dry_run
    assert state_path.read_bytes() == before
    assert not state_path.with_name("state.json.quarantine.1").exists()


def test_valid_state_file_loads(state_path: Path) -> None:
    sysctl = {
        "kind": "sysctl",
        "sysctl": "vfs_cache_pressure",
        "original": 100,
        "ours": 200,
        "pending": {"value": 300},
        "policy": "node",
        "recorded_at": WALL,
    }
    write_state(state_path, [good_entry(), sysctl])
    store = StateStore(state_path)
    assert store.load() == ()
    kinds = [(e.kind, e.name, e.original, e.ours) for e in store.entries()]
    assert kinds == [(KIND_MEMORY_HIGH, APP, None, 3221225472), (KIND_SYSCTL, "vfs_cache_pressure", 100, 200)]
    sysctl_entry = store.get(KIND_SYSCTL, "vfs_cache_pressure")
    assert sysctl_entry is not None
    assert sysctl_entry.pending == PendingWrite(300)


def test_a_new_entry_that_could_outgrow_the_loaders_limit_is_refused_and_updates_still_go_through(
    state_path: Path,
) -> None:
    limit = 2048
    store = StateStore(state_path, max_bytes=limit)
    recorded = []
    with pytest.raises(StateFull, match=f"above the {limit} its loader accepts"):
        for n in range(100):
            name = f"kubepods.slice/pod-{n:03d}-" + "x" * 60
            store.record_original(KIND_MEMORY_HIGH, name, None, "cache-heavy", WALL, cgroup_id=n)
            recorded.append(name)
    assert 0 < len(recorded) < 100
    assert [e.name for e in store.entries()] == recorded  # the refused one is not in memory either
    # Every recorded value can still reach its widest (a restore is always confirmed) ...
    for name in recorded:
        store.begin_write(KIND_MEMORY_HIGH, name, 2**63 - 1)
        store.update_ours(KIND_MEMORY_HIGH, name, 2**63 - 1)
    assert state_path.stat().st_size <= limit
    # ... and the next start loads the file the writer wrote, with the same limit.
    again = StateStore(state_path, max_bytes=limit)
    assert again.load() == ()
    assert [e.name for e in again.entries()] == recorded


def test_cgroup_id_round_trips_and_files_without_it_still_load(state_path: Path) -> None:
    store = StateStore(state_path)
    store.record_original(KIND_MEMORY_HIGH, APP, None, "cache-heavy", WALL, cgroup_id=4211)
    again = StateStore(state_path)
    assert again.load() == ()
    entry = again.get(KIND_MEMORY_HIGH, APP)
    assert entry is not None and entry.cgroup_id == 4211
    write_state(state_path, [good_entry()])
    older = StateStore(state_path)
    assert older.load() == ()
    entry = older.get(KIND_MEMORY_HIGH, APP)
    assert entry is not None and entry.cgroup_id is None
