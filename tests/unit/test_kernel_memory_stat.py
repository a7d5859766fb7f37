"""memory.stat: looked up by key, unknown keys kept, anything else refused."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Dict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.errors import CgroupGone, KernelFileMissing, KernelParseError
from remediator.kernel.memory_stat import (
    STAT_SKEW_BYTES,
    USAGE_PART_KEYS,
    ImplausibleMemoryStat,
    check_plausible,
    parse_flat_keyed,
    parse_memory_stat,
    read_memory_stat,
)
from remediator.readings import MemoryStat
from tests.fakefs import SEED_STAT, FakeKernel

SEED = "system.slice/seed.service"

# Shaped like a 6.x memory.stat (its keys, one per line; illustrative values consistent with the seed).
KERNEL_6_SAMPLE = (
    "anon 1824923648\n"
    "file 2387432448\n"
    "kernel 60932096\n"
    "kernel_stack 12582912\n"
    "pagetables 4153344\n"
    "sec_pagetables 0\n"
    "percpu 1440\n"
    "sock 1048576\n"
    "vmalloc 0\n"
    "shmem 104857600\n"
    "zswap 0\n"
    "zswapped 0\n"
    "file_mapped 83886080\n"
    "file_dirty 1302528\n"
    "file_writeback 0\n"
    "swapcached 0\n"
    "anon_thp 0\n"
    "active_anon 1929781248\n"
    "inactive_anon 0\n"
    "active_file 1203765248\n"
    "inactive_file 1078810624\n"
    "slab_reclaimable 38010880\n"
    "slab_unreclaimable 6290432\n"
    "slab 44301312\n"
    "workingset_refault_anon 0\n"
    "workingset_refault_file 48213\n"
    "pgscan 184022\n"
    "pgsteal 170001\n"
    "pgmajfault 5123\n"
)


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def test_parse_memory_stat_reads_the_seed_by_key() -> None:
    text = "".join(f"{k} {v}\n" for k, v in SEED_STAT.items())
    stat = parse_memory_stat(text, "seed")
    assert dict(stat.values) == SEED_STAT
    assert stat.get("file") == 2387432448
    assert stat.get("shmem") == 0  # absent key reads as the default


def test_parse_memory_stat_reads_a_kernel_sample_and_keeps_every_key() -> None:
    stat = parse_memory_stat(KERNEL_6_SAMPLE)
    assert len(stat.values) == KERNEL_6_SAMPLE.count("\n")
    assert stat.get("shmem") == 104857600
    assert stat.get("active_file") + stat.get("inactive_file") == 2282575872
    assert "zswapped" in stat


def test_key_order_does_not_matter() -> None:
    lines = KERNEL_6_SAMPLE.splitlines(keepends=True)
    assert parse_memory_stat("".join(reversed(lines))) == parse_memory_stat(KERNEL_6_SAMPLE)


def test_blank_lines_and_trailing_whitespace_are_tolerated() -> None:
    assert dict(parse_memory_stat("anon 1  \n\nfile 2\t\n\n").values) == {"anon": 1, "file": 2}


@pytest.mark.parametrize(
    "line",
    ["anon 1.5", "anon -5", "anon +5", "anon 1_000", "anon max", "anon", "anon 1 2", "anon \u0661\u0662"],
)
def test_a_value_that_is_not_a_plain_integer_is_a_parse_error(line: str) -> None:
    with pytest.raises(KernelParseError, match=r"memory\.stat"):
        parse_memory_stat(f"file 0\n{line}\n", "memory.stat")


def test_a_repeated_key_is_refused_rather_than_guessed() -> None:
    with pytest.raises(KernelParseError, match="twice"):
        parse_memory_stat("anon 1\nanon 2\n")


def test_read_memory_stat_reads_the_cgroups_file(kernel: FakeKernel) -> None:
    kernel.add_seed(SEED)
    assert dict(read_memory_stat(kernel.roots, SEED).values) == SEED_STAT


def test_read_memory_stat_of_a_removed_cgroup_is_cgroup_gone(kernel: FakeKernel) -> None:
    shutil.rmtree(kernel.add_seed(SEED))
    with pytest.raises(CgroupGone):
        read_memory_stat(kernel.roots, SEED)


def test_read_memory_stat_without_the_file_is_file_missing(kernel: FakeKernel) -> None:
    (kernel.add_seed(SEED) / "memory.stat").unlink()
    with pytest.raises(KernelFileMissing):
        read_memory_stat(kernel.roots, SEED)


_STAT_PIECES = st.sampled_from(
    ["anon", "file", " ", "\n", "\t", "0", "42", "-", ".", "max", "é", "\u0661", "_"]
)


@given(st.one_of(st.text(), st.lists(_STAT_PIECES, max_size=40).map("".join)))
def test_parse_memory_stat_raises_nothing_but_parse_errors(text: str) -> None:
    with contextlib.suppress(KernelParseError):
        parse_memory_stat(text, "fuzz")


_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)


@given(st.dictionaries(_KEYS, st.integers(min_value=0, max_value=2**64 - 1), max_size=60))
def test_generated_flat_keyed_text_round_trips(values: Dict[str, int]) -> None:
    text = "".join(f"{k} {v}\n" for k, v in values.items())
    assert parse_flat_keyed(text) == values
    assert dict(parse_memory_stat(text).values) == values


# ---- issue 12, item 8: figures the cgroup's usage cannot hold are refused ---------------------------

GiB = 1 << 30


def _stat(**values: int) -> MemoryStat:
    return MemoryStat(values=dict(values))


def test_a_file_figure_of_2_to_the_64_is_refused_naming_the_key_and_both_figures() -> None:
    # The probe: this made the reclaim rung write chunks for its whole 5 s budget.
    stat = parse_memory_stat(f"anon {GiB}\nfile {2**64 - 1}\n", "/cg/x/memory.stat")

    with pytest.raises(ImplausibleMemoryStat) as info:
        check_plausible(stat, 4 * GiB, 8 * GiB, "/cg/x/memory.stat")

    assert isinstance(info.value, KernelParseError)
    assert (info.value.key, info.value.value) == ("file", 2**64 - 1)
    assert str(info.value) == (
        "/cg/x/memory.stat: file 18446744073709551615 bytes is more than the cgroup's usage can hold "
        "(memory.current 4294967296, memory.max 8589934592, plus 256 MiB for the kernel's stat "
        "batching): refused as implausible"
    )


def test_a_real_kernel_memory_stat_at_its_limit_is_plausible() -> None:
    check_plausible(parse_memory_stat(KERNEL_6_SAMPLE), 4 * GiB, 4 * GiB)
    check_plausible(parse_memory_stat(KERNEL_6_SAMPLE), 4 * GiB, None)


def test_without_a_limit_a_part_may_exceed_memory_current_by_the_stat_skew_and_no_more() -> None:
    check_plausible(_stat(anon=GiB + STAT_SKEW_BYTES), GiB, None)

    with pytest.raises(ImplausibleMemoryStat, match=r"anon \d+ bytes .*\(memory.current 1073741824, plus"):
        check_plausible(_stat(anon=GiB + STAT_SKEW_BYTES + 1), GiB, None)


def test_stats_lagging_a_large_free_are_plausible_within_memory_max() -> None:
    # 6 GiB of anon just freed: memory.current is down at once, memory.stat a moment later.
    check_plausible(_stat(anon=6 * GiB, active_anon=6 * GiB), GiB, 8 * GiB)


@pytest.mark.parametrize(
    "key",
    [
        "pgscan",
        "pgsteal",
        "pgfault",
        "workingset_refault_file",
        "thp_fault_alloc",
        "zswpout",
        "zswapped",
        "hugetlb",
        "a_key_of_a_newer_kernel",
    ],
)
def test_counters_and_keys_that_are_not_parts_of_usage_are_not_compared(key: str) -> None:
    check_plausible(_stat(**{key: 2**64 - 1}), GiB, GiB)


@pytest.mark.parametrize("key", sorted(USAGE_PART_KEYS))
def test_every_part_of_usage_is_compared(key: str) -> None:
    with pytest.raises(ImplausibleMemoryStat) as info:
        check_plausible(_stat(**{key: 2**64 - 1}), GiB, None)
    assert info.value.key == key


@given(st.integers(min_value=0, max_value=2**50), st.data())
def test_a_stat_whose_parts_each_fit_in_memory_current_is_always_plausible(
    current: int, data: st.DataObject
) -> None:
    keys = data.draw(st.lists(st.sampled_from(sorted(USAGE_PART_KEYS)), unique=True))
    values = {key: data.draw(st.integers(min_value=0, max_value=current)) for key in keys}
    limit = data.draw(st.none() | st.integers(min_value=0, max_value=2**50))

    check_plausible(MemoryStat(values=values), current, limit)
