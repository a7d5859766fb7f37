"""Single-value memory files: memory.current, the limits ("max" = None) and the protections."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.errors import CgroupGone, KernelFileMissing, KernelParseError
from remediator.kernel.memory_limits import (
    PROTECTION_MAX_BYTES,
    parse_bytes,
    parse_limit,
    parse_protection,
    read_memory_current,
    read_memory_high,
    read_memory_low,
    read_memory_max,
    read_memory_min,
    read_memory_swap_max,
)
from tests.fakefs import FakeKernel

SEED = "system.slice/seed.service"


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def test_parse_limit_reads_max_as_none_and_bytes_as_int() -> None:
    assert parse_limit("max\n") is None
    assert parse_limit("4294967296\n") == 4294967296
    assert parse_limit("0\n") == 0


def test_parse_bytes_reads_memory_current() -> None:
    assert parse_bytes("4294836224\n") == 4294836224


@pytest.mark.parametrize("text", ["", "\n", "max\n", "-1\n", "12 34\n", "1.5G\n", "0x10\n"])
def test_parse_bytes_refuses_anything_but_one_byte_count(text: str) -> None:
    with pytest.raises(KernelParseError, match=r"memory\.current"):
        parse_bytes(text, "memory.current")


@pytest.mark.parametrize("text", ["", "MAX\n", "infinity\n", "max max\n", "-4096\n", "4K\n"])
def test_parse_limit_refuses_what_the_kernel_never_prints(text: str) -> None:
    with pytest.raises(KernelParseError):
        parse_limit(text, "memory.max")


def test_a_protection_of_max_reads_as_protect_everything() -> None:
    assert parse_protection("max\n") == PROTECTION_MAX_BYTES
    assert parse_protection("268435456\n") == 268435456


def test_readers_read_the_seed_cgroup(kernel: FakeKernel) -> None:
    kernel.add_seed(SEED)
    roots = kernel.roots
    assert read_memory_current(roots, SEED) == 4294836224
    assert read_memory_max(roots, SEED) == 4294967296
    assert read_memory_high(roots, SEED) is None
    assert read_memory_min(roots, SEED) == 0
    assert read_memory_low(roots, SEED) == 0
    assert read_memory_swap_max(roots, SEED) is None


def test_readers_read_set_limits_and_protections(kernel: FakeKernel) -> None:
    kernel.add_cgroup("a", high=3221225472, min_bytes=1048576, low=2097152, swap_max=0)
    kernel.set_file("a", "memory.low", "max\n")
    assert read_memory_high(kernel.roots, "a") == 3221225472
    assert read_memory_min(kernel.roots, "a") == 1048576
    assert read_memory_low(kernel.roots, "a") == PROTECTION_MAX_BYTES
    assert read_memory_swap_max(kernel.roots, "a") == 0


def test_missing_swap_max_reads_as_none_because_some_kernels_have_no_swap_controller(
    kernel: FakeKernel,
) -> None:
    (kernel.add_cgroup("a", swap_max=0) / "memory.swap.max").unlink()
    assert read_memory_swap_max(kernel.roots, "a") is None


def test_swap_max_of_a_removed_cgroup_is_still_cgroup_gone(kernel: FakeKernel) -> None:
    shutil.rmtree(kernel.add_cgroup("a"))
    with pytest.raises(CgroupGone):
        read_memory_swap_max(kernel.roots, "a")


def test_missing_memory_max_in_an_existing_cgroup_is_file_missing(kernel: FakeKernel) -> None:
    (kernel.add_cgroup("a") / "memory.max").unlink()
    with pytest.raises(KernelFileMissing):
        read_memory_max(kernel.roots, "a")


def test_memory_current_of_a_removed_cgroup_is_cgroup_gone(kernel: FakeKernel) -> None:
    shutil.rmtree(kernel.add_cgroup("a"))
    with pytest.raises(CgroupGone):
        read_memory_current(kernel.roots, "a")


_LIMIT_PIECES = st.sampled_from(["max", "0", "4096", " ", "\n", "-", "x", "\u0661", "_"])


@given(st.one_of(st.text(), st.lists(_LIMIT_PIECES, max_size=10).map("".join)))
def test_limit_parsers_raise_nothing_but_parse_errors(text: str) -> None:
    for parser in (parse_limit, parse_bytes, parse_protection):
        with contextlib.suppress(KernelParseError):
            parser(text, "fuzz")


@given(st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)))
def test_generated_limit_text_round_trips(value: Optional[int]) -> None:
    text = ("max" if value is None else str(value)) + "\n"
    assert parse_limit(text) == value
    if value is not None:
        assert parse_bytes(text) == value
