"""Snapshots: every field from its file, each file read exactly once per call."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from remediator.errors import CgroupGone, KernelParseError
from remediator.kernel.snapshot import read_cgroup_snapshot, read_node_snapshot
from remediator.readings import MemoryEvents, PressureLine
from tests.fakefs import SEED_STAT, FakeKernel

SEED = "system.slice/seed.service"
CGROUP_FILES = {
    "memory.pressure",
    "memory.current",
    "memory.max",
    "memory.high",
    "memory.min",
    "memory.low",
    "memory.swap.max",
    "memory.stat",
    "memory.events",
    "memory.events.local",
}


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts os.open calls by path."""
    counts: Counter[str] = Counter()
    real_open = os.open

    def counting_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        counts[os.fspath(path)] += 1
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    yield counts


def test_cgroup_snapshot_of_the_seed(kernel: FakeKernel) -> None:
    kernel.add_seed(SEED)
    snap = read_cgroup_snapshot(kernel.roots, SEED)
    assert snap.cgroup == SEED
    assert snap.current_bytes == 4294836224
    assert snap.max_bytes == 4294967296
    assert snap.high_bytes is None
    assert (snap.min_bytes, snap.low_bytes) == (0, 0)
    assert snap.swap_max_bytes is None
    assert dict(snap.stat.values) == SEED_STAT
    assert snap.events == MemoryEvents(max=12, oom=1, oom_kill=1)
    assert snap.pressure.some == PressureLine(78.20, 41.11, 12.02, 183742991)


def test_cgroup_snapshot_reads_each_file_exactly_once(kernel: FakeKernel, opened: Counter[str]) -> None:
    directory = kernel.add_seed(SEED)
    read_cgroup_snapshot(kernel.roots, SEED)
    assert opened == Counter({str(directory / name): 1 for name in CGROUP_FILES})


def test_cgroup_snapshot_takes_a_name_as_printed_in_proc_pid_cgroup(kernel: FakeKernel) -> None:
    kernel.add_seed(SEED)
    assert read_cgroup_snapshot(kernel.roots, "/" + SEED).cgroup == SEED


def test_cgroup_snapshot_without_swap_controller_reads_swap_max_as_none(kernel: FakeKernel) -> None:
    (kernel.add_cgroup("a", swap_max=0) / "memory.swap.max").unlink()
    assert read_cgroup_snapshot(kernel.roots, "a").swap_max_bytes is None


def test_cgroup_snapshot_of_a_removed_cgroup_is_cgroup_gone(kernel: FakeKernel) -> None:
    shutil.rmtree(kernel.add_seed(SEED))
    with pytest.raises(CgroupGone):
        read_cgroup_snapshot(kernel.roots, SEED)


def test_cgroup_snapshot_with_a_garbled_file_is_a_parse_error(kernel: FakeKernel) -> None:
    kernel.add_seed(SEED)
    kernel.set_file(SEED, "memory.high", "lots\n")
    with pytest.raises(KernelParseError, match=r"memory\.high"):
        read_cgroup_snapshot(kernel.roots, SEED)


def test_node_snapshot_reads_pressure_meminfo_and_vfs_cache_pressure(kernel: FakeKernel) -> None:
    node = read_node_snapshot(kernel.roots)
    assert node.pressure.some.total_us == 0
    assert node.mem_total_bytes == 16384000 * 1024
    assert node.mem_available_bytes == 8192000 * 1024
    assert (node.swap_total_bytes, node.swap_free_bytes) == (0, 0)
    assert node.slab_reclaimable_bytes == 204800 * 1024
    assert node.vfs_cache_pressure == 100


def test_node_snapshot_reads_each_file_exactly_once(kernel: FakeKernel, opened: Counter[str]) -> None:
    read_node_snapshot(kernel.roots)
    proc = kernel.proc_root
    assert opened == Counter(
        {
            str(proc / "pressure/memory"): 1,
            str(proc / "meminfo"): 1,
            str(proc / "sys/vm/vfs_cache_pressure"): 1,
        }
    )


def test_node_snapshot_without_vfs_cache_pressure_still_has_the_pressure(kernel: FakeKernel) -> None:
    (kernel.proc_root / "sys/vm/vfs_cache_pressure").unlink()
    node = read_node_snapshot(kernel.roots)
    assert node.vfs_cache_pressure is None
    assert node.mem_total_bytes == 16384000 * 1024


def test_cgroup_snapshot_keeps_the_cgroups_own_events_apart_from_its_subtrees(kernel: FakeKernel) -> None:
    kernel.add_seed(SEED)
    kernel.set_file(SEED, "memory.events.local", "low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\n")
    kernel.set_file(SEED, "memory.events", "low 0\nhigh 40\nmax 12\noom 1\noom_kill 1\n")
    snap = read_cgroup_snapshot(kernel.roots, SEED)
    assert snap.events.high == 40
    assert snap.own_high_events == 3


def test_snapshot_without_events_local_falls_back_to_the_hierarchical_counter(kernel: FakeKernel) -> None:
    (kernel.add_seed(SEED) / "memory.events.local").unlink()
    snap = read_cgroup_snapshot(kernel.roots, SEED)
    assert snap.events_local is None
    assert snap.own_high_events == snap.events.high


def test_a_stat_claiming_more_than_the_cgroup_can_hold_is_refused_by_name(kernel: FakeKernel) -> None:
    # 4 GiB used, no limit: 64 GiB of page cache is not the kernel's figure (a crafted tree).
    kernel.add_cgroup(SEED, current=4 << 30, stat={**SEED_STAT, "file": 64 << 30})
    with pytest.raises(KernelParseError, match=r"memory\.stat.*file 68719476736 bytes"):
        read_cgroup_snapshot(kernel.roots, SEED)


def test_a_stat_within_the_limit_is_taken_although_usage_fell_below_it(kernel: FakeKernel) -> None:
    # Stats lag a large free: 3 GiB of file under a 4 GiB limit with 1 GiB now in use is plausible.
    stat = {**SEED_STAT, "anon": 1 << 29, "file": 3 << 30}
    kernel.add_cgroup(SEED, current=1 << 30, max_bytes=4 << 30, stat=stat)
    assert read_cgroup_snapshot(kernel.roots, SEED).stat.get("file") == 3 << 30
