"""memory.events and memory.events.local: known counters into fields, the rest kept in ``other``."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Dict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.errors import CgroupGone, KernelFileMissing, KernelParseError
from remediator.kernel.memory_events import KNOWN_EVENTS, parse_memory_events, read_memory_events
from remediator.readings import MemoryEvents
from tests.fakefs import SEED_EVENTS, FakeKernel

SEED = "system.slice/seed.service"


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def test_parse_memory_events_reads_the_seed_counters() -> None:
    text = "".join(f"{k} {v}\n" for k, v in SEED_EVENTS.items())
    assert parse_memory_events(text) == MemoryEvents(
        low=0, high=0, max=12, oom=1, oom_kill=1, oom_group_kill=0
    )


def test_parse_memory_events_reads_a_6_1_file_and_keeps_unknown_counters() -> None:
    text = "low 3\nhigh 1843\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\nsock_throttled 7\n"
    events = parse_memory_events(text)
    assert (events.low, events.high, events.max, events.oom, events.oom_kill) == (3, 1843, 12, 1, 1)
    assert dict(events.other) == {"sock_throttled": 7}


def test_a_known_counter_missing_from_an_older_kernel_reads_as_zero() -> None:
    # oom_group_kill arrived in 5.17.
    events = parse_memory_events("low 0\nhigh 5\nmax 0\noom 0\noom_kill 0\n")
    assert events.high == 5
    assert events.oom_group_kill == 0
    assert dict(events.other) == {}


def test_a_non_integer_counter_is_a_parse_error() -> None:
    with pytest.raises(KernelParseError, match=r"memory\.events"):
        parse_memory_events("high lots\n", "memory.events")


def test_read_memory_events_reads_hierarchical_by_default_and_local_when_asked(kernel: FakeKernel) -> None:
    kernel.add_seed(SEED)
    kernel.set_file(
        SEED, "memory.events.local", "low 0\nhigh 2\nmax 3\noom 0\noom_kill 0\noom_group_kill 0\n"
    )
    assert read_memory_events(kernel.roots, SEED).max == 12
    local = read_memory_events(kernel.roots, SEED, local=True)
    assert (local.high, local.max) == (2, 3)


def test_read_memory_events_of_a_removed_cgroup_is_cgroup_gone(kernel: FakeKernel) -> None:
    shutil.rmtree(kernel.add_seed(SEED))
    with pytest.raises(CgroupGone):
        read_memory_events(kernel.roots, SEED)


def test_read_memory_events_local_missing_is_file_missing(kernel: FakeKernel) -> None:
    (kernel.add_seed(SEED) / "memory.events.local").unlink()
    with pytest.raises(KernelFileMissing):
        read_memory_events(kernel.roots, SEED, local=True)


_EVENT_PIECES = st.sampled_from(["low", "high", "oom_kill", " ", "\n", "0", "9", "-", "x", "é"])


@given(st.one_of(st.text(), st.lists(_EVENT_PIECES, max_size=40).map("".join)))
def test_parse_memory_events_raises_nothing_but_parse_errors(text: str) -> None:
    with contextlib.suppress(KernelParseError):
        parse_memory_events(text, "fuzz")


_COUNTER = st.integers(min_value=0, max_value=2**64 - 1)
_UNKNOWN_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(lambda k: k not in KNOWN_EVENTS)


@given(
    st.fixed_dictionaries({}, optional=dict.fromkeys(KNOWN_EVENTS, _COUNTER)),
    st.dictionaries(_UNKNOWN_KEYS, _COUNTER, max_size=5),
)
def test_generated_events_text_round_trips(known: Dict[str, int], unknown: Dict[str, int]) -> None:
    text = "".join(f"{k} {v}\n" for k, v in {**known, **unknown}.items())
    events = parse_memory_events(text)
    for key in KNOWN_EVENTS:
        assert getattr(events, key) == known.get(key, 0)
    assert dict(events.other) == unknown
