"""vm sysctls: vfs_cache_pressure is read; drop_caches is only looked at, never opened."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.errors import KernelFileMissing, KernelParseError
from remediator.kernel.sysctl_vm import (
    DROP_CACHES,
    VFS_CACHE_PRESSURE,
    parse_sysctl_int,
    read_vfs_cache_pressure,
    vm_sysctl_path,
)
from tests.fakefs import FakeKernel


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def test_read_vfs_cache_pressure_reads_the_proc_root(kernel: FakeKernel) -> None:
    assert read_vfs_cache_pressure(kernel.roots) == 100
    (kernel.proc_root / "sys/vm/vfs_cache_pressure").write_text("500\n")
    assert read_vfs_cache_pressure(kernel.roots) == 500


def test_missing_vfs_cache_pressure_is_file_missing(kernel: FakeKernel) -> None:
    (kernel.proc_root / "sys/vm/vfs_cache_pressure").unlink()
    with pytest.raises(KernelFileMissing):
        read_vfs_cache_pressure(kernel.roots)


@pytest.mark.parametrize("text", ["", "-1\n", "1 2\n", "abc\n", "1.0\n"])
def test_parse_sysctl_int_refuses_anything_but_one_integer(text: str) -> None:
    with pytest.raises(KernelParseError):
        parse_sysctl_int(text, "vfs_cache_pressure")


def test_vm_sysctl_path_is_under_the_proc_root_and_only_for_known_sysctls(kernel: FakeKernel) -> None:
    assert vm_sysctl_path(kernel.roots, VFS_CACHE_PRESSURE) == kernel.proc_root / "sys/vm/vfs_cache_pressure"
    assert vm_sysctl_path(kernel.roots, DROP_CACHES) == kernel.proc_root / "sys/vm/drop_caches"
    with pytest.raises(ValueError, match="swappiness"):
        vm_sysctl_path(kernel.roots, "swappiness")


@given(
    st.one_of(st.text(), st.lists(st.sampled_from(["1", "00", " ", "\n", "-", "x"]), max_size=8).map("".join))
)
def test_parse_sysctl_int_raises_nothing_but_parse_errors(text: str) -> None:
    with contextlib.suppress(KernelParseError):
        parse_sysctl_int(text, "fuzz")


@given(st.integers(min_value=0, max_value=2**63))
def test_generated_sysctl_text_round_trips(value: int) -> None:
    assert parse_sysctl_int(f"{value}\n") == value
