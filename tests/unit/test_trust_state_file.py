"""The state file is private and distrusted: a hostile one is quarantined and never makes the daemon
write anything but the allow-listed files, under the cgroup root, of cgroups that still exist.

Its directory must be the daemon's alone (0700 as created): whoever can write the directory can
remove or replace the file, and with it the originals a restore needs. So a directory writable by
others refuses new changes (what cannot be recorded safely is not done) and distrusts what is there.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.clock import FakeClock
from remediator.daemon.executor import Executor
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.state_schema import KIND_MEMORY_HIGH, MAX_STATE_FILE_BYTES, OWNABLE_SYSCTLS
from remediator.daemon.state_store import StateStore, StateUnwritable
from remediator.kernel.roots import normalize_cgroup
from remediator.knobs.memory_high import SetMemoryHigh
from remediator.records import Record, RecordType
from tests.fakefs import FakeKernel

APP = "system.slice/app.service"
WALL = 1_700_000_000.0
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def entry(**overrides: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {
        "kind": "memory_high",
        "cgroup": APP,
        "original": "max",
        "ours": 3221225472,
        "pending": None,
        "policy": "p",
        "recorded_at": WALL,
    }
    base.update(overrides)
    return base


def leave(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    path.chmod(0o600)


def document(*entries: Dict[str, Any]) -> str:
    return json.dumps({"schema_version": 1, "entries": list(entries)})


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "remediator" / "state.json"


def loads_as_quarantined(path: Path) -> Record:
    store = StateStore(path)
    records = store.load()
    assert [r.type for r in records] == [RecordType.STATE_QUARANTINED], records
    assert store.entries() == ()
    return records[0]


# ---- hostile contents ----------------------------------------------------------------------

HOSTILE = {
    "a 5000-digit number": '{"schema_version": 1, "entries": [{"kind": "memory_high", "cgroup": "a", '
    '"original": ' + "9" * 5000 + ', "ours": 1, "policy": "p", "recorded_at": 1}]}',
    "limit one past the kernel's": document(entry(ours=2**63)),
    "negative time": document(entry(recorded_at=-1.0)),
    "nesting 100000 deep": '{"entries": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "entries is a mapping": json.dumps({"schema_version": 1, "entries": {"0": entry()}}),
    "entry is a string": json.dumps({"schema_version": 1, "entries": ["memory_high system.slice/x 0"]}),
    "entry is null": json.dumps({"schema_version": 1, "entries": [None]}),
    "cgroup is a number": document(entry(cgroup=7)),
    "policy is a list": document(entry(policy=["p"])),
    "time is text": document(entry(recorded_at="yesterday")),
    "drop_caches is not owned": document(
        {
            "kind": "sysctl",
            "sysctl": "drop_caches",
            "original": 0,
            "ours": 3,
            "policy": "p",
            "recorded_at": WALL,
        }
    ),
    "sysctl by path": document(
        {
            "kind": "sysctl",
            "sysctl": "sys/vm/../kernel/core_pattern",
            "original": 0,
            "ours": 1,
            "policy": "p",
            "recorded_at": WALL,
        }
    ),
    "vfs_cache_pressure restored to 0": document(
        {
            "kind": "sysctl",
            "sysctl": "vfs_cache_pressure",
            "original": 0,
            "ours": 200,
            "policy": "p",
            "recorded_at": WALL,
        }
    ),
    "another file of the cgroup": document(entry(file="memory.max")),
    "path outside the root": document(entry(cgroup="../../../etc/cron.d/x")),
    "absolute path": document(entry(cgroup="/etc/cron.d")),
    "trailing slash": document(entry(cgroup="system.slice/app.service/")),
    "NUL in the name": document(entry(cgroup="system.slice/a\u0000b")),
    "policy name 10 KiB long": document(entry(policy="p" * 10_240)),
    "invalid UTF-8": '{"entries": "\udcff"}',
    "a second document after the first": document(entry()) + document(entry()),
    "empty file": "",
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_state_file_is_quarantined(state_path: Path, text: str) -> None:
    state_path.parent.mkdir(parents=True, mode=0o700)
    state_path.write_bytes(text.encode("utf-8", "surrogateescape"))
    state_path.chmod(0o600)

    record = loads_as_quarantined(state_path)

    assert not state_path.exists()
    assert record.extra["QUARANTINE_FILE"].endswith("state.json.quarantine.1")


def test_state_file_over_the_size_limit_is_quarantined_unread(state_path: Path) -> None:
    leave(state_path, document(entry()) + " " * MAX_STATE_FILE_BYTES)

    assert "too large" in loads_as_quarantined(state_path).message


def test_fifo_in_place_of_the_state_file_is_quarantined_without_hanging(state_path: Path) -> None:
    state_path.parent.mkdir(parents=True, mode=0o700)
    os.mkfifo(state_path, 0o600)
    outcome: List[Record] = []
    loader = threading.Thread(target=lambda: outcome.extend(StateStore(state_path).load()), daemon=True)

    loader.start()
    loader.join(timeout=30)

    assert not loader.is_alive(), "load() blocked on a FIFO"
    assert [r.type for r in outcome] == [RecordType.STATE_QUARANTINED]


@needs_root
def test_state_file_owned_by_another_user_is_quarantined(state_path: Path) -> None:
    leave(state_path, document(entry()))
    os.chown(state_path, 65534, 65534)

    assert "owned by uid 65534" in loads_as_quarantined(state_path).message


def test_state_file_reached_through_a_symlinked_name_is_quarantined(state_path: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "state.json"
    leave(real, document(entry()))
    state_path.parent.mkdir(parents=True, mode=0o700)
    os.symlink(real, state_path)

    assert "symlink" in loads_as_quarantined(state_path).message
    assert real.exists()


# ---- the private directory ---------------------------------------------------------------


def test_state_directory_is_created_0700_and_the_file_0600(state_path: Path) -> None:
    StateStore(state_path).record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)

    assert state_path.parent.stat().st_mode & 0o777 == 0o700
    assert state_path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777], ids=["0770", "0707", "1777"])
def test_state_directory_writable_by_others_refuses_to_record(state_path: Path, mode: int) -> None:
    state_path.parent.mkdir(parents=True)
    state_path.parent.chmod(mode)

    with pytest.raises(StateUnwritable, match=f"writable by others \\(mode {mode:04o}\\)"):
        StateStore(state_path).record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)

    assert not state_path.exists()


def test_state_directory_writable_by_others_makes_its_file_untrusted(state_path: Path) -> None:
    leave(state_path, document(entry()))
    state_path.parent.chmod(0o777)

    assert "writable by others" in loads_as_quarantined(state_path).message


@needs_root
def test_state_directory_owned_by_another_user_refuses_to_record(state_path: Path) -> None:
    state_path.parent.mkdir(parents=True, mode=0o700)
    os.chown(state_path.parent, 65534, 65534)

    with pytest.raises(StateUnwritable, match="owned by uid 65534"):
        StateStore(state_path).record_original(KIND_MEMORY_HIGH, APP, None, "p", WALL)


def test_executor_refuses_a_change_it_could_only_record_in_a_shared_directory(
    state_path: Path, tmp_path: Path
) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    kernel.add_cgroup(APP, current=1 << 30, max_bytes=2 << 30)
    state_path.parent.mkdir(parents=True)
    state_path.parent.chmod(0o777)
    clock = FakeClock()
    executor = Executor(KernelFiles.under(kernel.roots), StateStore(state_path), clock, sleep=clock.advance)
    cause = Record(RecordType.ACTION_APPLIED, f"set memory.high of {APP} to 1.0 GiB", policy="p", cgroup=APP)

    outcome = executor.execute(SetMemoryHigh(APP, 1 << 30, None, cause))

    assert outcome.result == "refused"
    assert [r.type for r in outcome.records] == [RecordType.STATE_UNWRITABLE]
    assert "writable by others" in outcome.records[0].message
    assert kernel.read_file(APP, "memory.high") == "max\n"


# ---- a valid-looking file is still only believed about allowed files of existing cgroups ----


def recover(kernel: FakeKernel, state_path: Path) -> List[Record]:
    clock = FakeClock()
    executor = Executor(KernelFiles.under(kernel.roots), StateStore(state_path), clock, sleep=clock.advance)
    return list(executor.recover())


def test_recovery_of_a_cgroup_that_no_longer_exists_writes_and_creates_nothing(
    state_path: Path, tmp_path: Path
) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    leave(state_path, document(entry(cgroup="system.slice/gone.service")))
    before = kernel.snapshot_files()

    records = recover(kernel, state_path)

    assert [r.result for r in records] == ["gone"]
    assert kernel.snapshot_files() == before
    assert not (kernel.cgroup_root / "system.slice" / "gone.service").exists()


def test_recovery_never_follows_a_symlinked_cgroup_out_of_the_tree(state_path: Path, tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "memory.high").write_text("3221225472\n")  # "ours", so a restore would write here
    (kernel.cgroup_root / "system.slice").mkdir()
    os.symlink(outside, kernel.cgroup_root / "system.slice" / "app.service")
    leave(state_path, document(entry()))

    records = recover(kernel, state_path)

    assert [r.result for r in records] == ["gone"]
    assert (outside / "memory.high").read_text() == "3221225472\n"


# ---- any JSON at all -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
entry_like = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["memory_high", "sysctl", "memory_max"]),
        "cgroup": st.sampled_from([APP, "../x", "/abs", "a//b", "ok.slice", "", "a\nb"])
        | st.text(max_size=8),
        "sysctl": st.sampled_from(["vfs_cache_pressure", "drop_caches", "swappiness"]),
        "original": st.sampled_from(["max", -1, 0, 2**63, 2**31]) | json_values,
        "ours": st.integers(min_value=-1, max_value=2**64) | st.just("max"),
        "policy": st.text(max_size=5),
        "recorded_at": st.floats(allow_nan=False) | st.integers(),
    }
).map(lambda d: {k: v for k, v in d.items() if not (k == "sysctl" and d["kind"] == "memory_high")})
state_documents = (
    st.fixed_dictionaries(
        {"schema_version": st.sampled_from([1, 1, 2, "1"]), "entries": st.lists(entry_like, max_size=4)}
    )
    | json_values
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as base:
        yield Path(base)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state_documents)
def test_any_json_either_loads_only_allowed_entries_or_is_quarantined(scratch: Path, value: Any) -> None:
    path = scratch / "run" / "state.json"
    for old in scratch.glob("run/*"):
        old.unlink()
    leave(path, json.dumps(value))

    store = StateStore(path)
    records = store.load()

    if records:
        assert [r.type for r in records] == [RecordType.STATE_QUARANTINED]
        assert store.entries() == ()
        return
    for owned in store.entries():
        if owned.kind == KIND_MEMORY_HIGH:
            assert owned.name and normalize_cgroup(owned.name) == owned.name
            values = [owned.original, owned.ours]
            assert all(v is None or 0 <= v < 2**63 for v in values)
        else:
            assert owned.name in OWNABLE_SYSCTLS
            assert owned.original is not None and 0 <= owned.original < 2**31


def test_pid_file_is_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    from remediator.daemon.pid_file import pid_file_path, write_pid_file

    state_dir = tmp_path / "run"
    state_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state_dir / "remediator.tmp").symlink_to(victim)
    (state_dir / "remediator.pid").symlink_to(victim)

    written = write_pid_file(pid_file_path(state_dir / "state.json"))

    assert written == state_dir / "remediator.pid"
    assert victim.read_text() == "precious\n"
    assert not written.is_symlink()
    assert written.read_text() == f"{os.getpid()}\n"
