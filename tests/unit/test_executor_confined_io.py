"""The confined writer: allow-list and symlink-proof walks, on a FakeKernel tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from remediator.daemon.confined_io import (
    CgroupFile,
    ConfinedIO,
    PathNotConfined,
    ProcFile,
    WriteNotAllowed,
)
from remediator.errors import CgroupGone, KernelFileMissing
from remediator.kernel.roots import KernelRoots
from tests.fakefs import FakeKernel

APP = "system.slice/app.service"


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    k = FakeKernel(tmp_path / "k")
    k.add_cgroup(APP, current=1 << 30, high=None)
    return k


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside both roots, holding files a misdirected write would hit."""
    d = tmp_path / "outside"
    d.mkdir()
    for name in ("memory.high", "memory.reclaim", "vfs_cache_pressure"):
        (d / name).write_text("untouched\n")
    return d


@pytest.mark.parametrize(
    "name", ["memory.max", "memory.min", "cgroup.procs", "memory.swap.max", "cgroup.kill"]
)
def test_write_refuses_cgroup_files_outside_the_allow_list(kernel: FakeKernel, name: str) -> None:
    (kernel.cgroup_root / APP / name).write_text("0\n")
    with pytest.raises(WriteNotAllowed):
        ConfinedIO(kernel.roots).write(CgroupFile(APP, name), b"1")
    assert kernel.read_file(APP, name) == "0\n"


@pytest.mark.parametrize(
    "relative", ["sys/vm/swappiness", "sys/kernel/osrelease", "sys/vm/../vm/drop_caches"]
)
def test_write_refuses_proc_files_outside_the_allow_list(kernel: FakeKernel, relative: str) -> None:
    with pytest.raises(WriteNotAllowed):
        ConfinedIO(kernel.roots).write(ProcFile(relative), b"1")


@pytest.mark.parametrize("cgroup", ["../outside", "system.slice/../../outside", "a//b", "a/./b", "x\0y"])
def test_write_refuses_cgroup_names_that_could_escape_the_root(kernel: FakeKernel, cgroup: str) -> None:
    with pytest.raises(WriteNotAllowed):
        ConfinedIO(kernel.roots).write(CgroupFile(cgroup, "memory.high"), b"1")


@pytest.mark.parametrize("name", ["../memory.high", "", "..", "x/memory.high"])
def test_write_refuses_file_names_with_path_components(kernel: FakeKernel, name: str) -> None:
    with pytest.raises(WriteNotAllowed):
        ConfinedIO(kernel.roots).write(CgroupFile(APP, name), b"1")


def test_symlinked_cgroup_directory_pointing_outside_is_refused(kernel: FakeKernel, outside: Path) -> None:
    os.symlink(outside, kernel.cgroup_root / "system.slice" / "evil.service")
    with pytest.raises(PathNotConfined, match="symlink"):
        ConfinedIO(kernel.roots).write(CgroupFile("system.slice/evil.service", "memory.high"), b"1")
    assert (outside / "memory.high").read_text() == "untouched\n"


def test_symlinked_parent_directory_is_refused(kernel: FakeKernel, outside: Path) -> None:
    (outside / "app.service").mkdir()
    (outside / "app.service" / "memory.high").write_text("untouched\n")
    os.symlink(outside, kernel.cgroup_root / "evil.slice")
    with pytest.raises(PathNotConfined):
        ConfinedIO(kernel.roots).write(CgroupFile("evil.slice/app.service", "memory.high"), b"1")
    assert (outside / "app.service" / "memory.high").read_text() == "untouched\n"


def test_symlinked_interface_file_pointing_outside_is_refused(kernel: FakeKernel, outside: Path) -> None:
    target = kernel.cgroup_root / APP / "memory.high"
    target.unlink()
    os.symlink(outside / "memory.high", target)
    with pytest.raises(PathNotConfined):
        ConfinedIO(kernel.roots).write(CgroupFile(APP, "memory.high"), b"1")
    with pytest.raises(PathNotConfined):
        ConfinedIO(kernel.roots).read(CgroupFile(APP, "memory.high"))
    assert (outside / "memory.high").read_text() == "untouched\n"


def test_symlinked_proc_sys_directory_is_refused(kernel: FakeKernel, outside: Path) -> None:
    vm = kernel.proc_root / "sys" / "vm"
    for child in vm.iterdir():
        child.unlink()
    vm.rmdir()
    os.symlink(outside, vm)
    with pytest.raises(PathNotConfined):
        ConfinedIO(kernel.roots).write(ProcFile("sys/vm/vfs_cache_pressure"), b"200")
    assert (outside / "vfs_cache_pressure").read_text() == "untouched\n"


def test_fifo_in_place_of_an_interface_file_is_refused_without_blocking(kernel: FakeKernel) -> None:
    target = kernel.cgroup_root / APP / "memory.high"
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(PathNotConfined, match="regular file"):
        ConfinedIO(kernel.roots).write(CgroupFile(APP, "memory.high"), b"1")


def test_the_roots_themselves_may_be_symlinks(kernel: FakeKernel, tmp_path: Path) -> None:
    # --cgroup-root is the operator's choice (e.g. /host/sys/fs/cgroup): not part of the tree.
    link = tmp_path / "cgroup-link"
    os.symlink(kernel.cgroup_root, link)
    io = ConfinedIO(KernelRoots(cgroup_root=link, proc_root=kernel.proc_root))
    io.write(CgroupFile(APP, "memory.high"), b"1073741824")
    assert kernel.read_file(APP, "memory.high") == "1073741824"


def test_allowed_write_reaches_the_file_and_read_sees_it(kernel: FakeKernel) -> None:
    io = ConfinedIO(kernel.roots)
    io.write(CgroupFile(APP, "memory.high"), b"2147483648")
    assert io.read(CgroupFile(APP, "memory.high")) == "2147483648"
    io.write(ProcFile("sys/vm/vfs_cache_pressure"), b"200")
    assert (kernel.proc_root / "sys" / "vm" / "vfs_cache_pressure").read_text() == "200"


def test_any_cgroup_interface_file_may_be_read(kernel: FakeKernel) -> None:
    assert ConfinedIO(kernel.roots).read(CgroupFile(APP, "memory.current")) == f"{1 << 30}\n"


def test_write_to_a_removed_cgroup_is_cgroup_gone(kernel: FakeKernel) -> None:
    d = kernel.cgroup_root / APP
    for child in d.iterdir():
        child.unlink()
    d.rmdir()
    with pytest.raises(CgroupGone):
        ConfinedIO(kernel.roots).write(CgroupFile(APP, "memory.high"), b"1")


def test_missing_interface_file_in_an_existing_cgroup_is_file_missing(kernel: FakeKernel) -> None:
    (kernel.cgroup_root / APP / "memory.reclaim").unlink()
    io = ConfinedIO(kernel.roots)
    assert not io.exists(CgroupFile(APP, "memory.reclaim"))
    with pytest.raises(KernelFileMissing):
        io.write(CgroupFile(APP, "memory.reclaim"), b"1")


def test_exists_does_not_need_read_access(kernel: FakeKernel) -> None:
    # memory.reclaim is write-only in the kernel (mode 0200, no read handler).
    (kernel.cgroup_root / APP / "memory.reclaim").chmod(0o200)
    assert ConfinedIO(kernel.roots).exists(CgroupFile(APP, "memory.reclaim"))


def test_cgroup_exists_follows_the_same_walk(kernel: FakeKernel, outside: Path) -> None:
    io = ConfinedIO(kernel.roots)
    os.symlink(outside, kernel.cgroup_root / "linked.slice")
    assert io.cgroup_exists(APP)
    assert not io.cgroup_exists("system.slice/nothing.service")
    assert not io.cgroup_exists("linked.slice")
    assert not io.cgroup_exists("../outside")


def test_hard_linked_interface_file_is_refused_for_writing(kernel: FakeKernel, outside: Path) -> None:
    target = kernel.cgroup_root / APP / "memory.high"
    target.unlink()
    os.link(outside / "memory.high", target)
    with pytest.raises(PathNotConfined, match="2 hard links"):
        ConfinedIO(kernel.roots).write(CgroupFile(APP, "memory.high"), b"1")
    assert (outside / "memory.high").read_text() == "untouched\n"
    # Reading it harms nothing: the re-read before a write still reports what is there.
    assert ConfinedIO(kernel.roots).read(CgroupFile(APP, "memory.high")) == "untouched\n"


def test_cgroup_id_differs_for_a_cgroup_created_again_under_the_same_name(kernel: FakeKernel) -> None:
    io = ConfinedIO(kernel.roots)
    first = io.cgroup_id(APP)
    assert io.cgroup_id(APP) == first
    old = kernel.cgroup_root / APP
    # The new directory exists before the old one goes, so the file system cannot hand back its inode.
    kernel.add_cgroup("system.slice/new.service", current=1 << 20, high=None)
    for child in old.iterdir():
        child.unlink()
    old.rmdir()
    os.rename(kernel.cgroup_root / "system.slice/new.service", old)
    assert io.cgroup_id(APP) != first
    with pytest.raises(CgroupGone):
        io.cgroup_id("system.slice/never.service")


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_memory_reclaim_that_is_there_but_not_a_file_is_refused_not_taken_for_an_old_kernel(
    kernel: FakeKernel, outside: Path, kind: str
) -> None:
    target = kernel.cgroup_root / APP / "memory.reclaim"
    target.unlink()
    if kind == "symlink":
        os.symlink(outside / "memory.reclaim", target)
    else:
        os.mkfifo(target)
    with pytest.raises(PathNotConfined):
        ConfinedIO(kernel.roots).exists(CgroupFile(APP, "memory.reclaim"))
