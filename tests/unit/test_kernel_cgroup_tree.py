"""Walking the cgroup tree: depth-first, sorted, no symlinks, tolerant of cgroups that vanish."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from remediator.errors import KernelPermissionDenied
from remediator.kernel.cgroup_tree import cgroup_exists, walk_cgroups
from remediator.kernel.roots import InvalidCgroupName
from tests.fakefs import FakeKernel


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    k = FakeKernel(tmp_path)
    for name in ("b.slice", "a.slice/y.service", "a.slice", "a.slice/x.service", "b.slice/z.scope"):
        k.add_cgroup(name)
    return k


def test_walk_yields_memory_cgroups_depth_first_in_name_order(kernel: FakeKernel) -> None:
    assert list(walk_cgroups(kernel.roots)) == [
        "a.slice",
        "a.slice/x.service",
        "a.slice/y.service",
        "b.slice",
        "b.slice/z.scope",
    ]


def test_walk_of_everything_starts_with_the_root(kernel: FakeKernel) -> None:
    (kernel.cgroup_root / "no-memory").mkdir()
    assert list(walk_cgroups(kernel.roots, memory_only=False)) == [
        "",
        "a.slice",
        "a.slice/x.service",
        "a.slice/y.service",
        "b.slice",
        "b.slice/z.scope",
        "no-memory",
    ]


def test_walk_skips_cgroups_without_the_memory_controller_and_their_subtrees(kernel: FakeKernel) -> None:
    child = kernel.cgroup_root / "cpu-only" / "child"
    child.mkdir(parents=True)
    # Cannot happen on a real kernel (controllers are enabled top-down); here it
    # proves the subtree below a memory-less cgroup is not even looked at.
    (child / "memory.current").write_text("0\n")
    names = list(walk_cgroups(kernel.roots))
    assert "cpu-only" not in names
    assert "cpu-only/child" not in names


def test_walk_does_not_follow_symlinks(kernel: FakeKernel) -> None:
    os.symlink(kernel.cgroup_root / "a.slice", kernel.cgroup_root / "link.slice")
    os.symlink(kernel.cgroup_root, kernel.cgroup_root / "b.slice" / "loop")
    names = list(walk_cgroups(kernel.roots, memory_only=False))
    assert not any(n.startswith("link.slice") or n.endswith("loop") for n in names)
    assert len(names) == 6


def test_walk_skips_a_cgroup_removed_while_walking(kernel: FakeKernel) -> None:
    seen = []
    for name in walk_cgroups(kernel.roots):
        seen.append(name)
        if name == "a.slice/x.service":
            shutil.rmtree(kernel.cgroup_root / "b.slice")
    assert seen == ["a.slice", "a.slice/x.service", "a.slice/y.service"]


def test_walk_of_everything_survives_a_directory_vanishing_between_listing_and_descending(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scandir = os.scandir
    vanished = str(kernel.cgroup_root / "b.slice")

    def scandir_losing_b(path: Any) -> Any:
        if os.fspath(path) == vanished:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", vanished)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_losing_b)
    names = list(walk_cgroups(kernel.roots, memory_only=False))
    assert "b.slice/z.scope" not in names
    assert "a.slice/y.service" in names


def test_walk_reports_a_listing_it_is_not_allowed_to_read(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def scandir_denied(path: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    monkeypatch.setattr(os, "scandir", scandir_denied)
    with pytest.raises(KernelPermissionDenied):
        list(walk_cgroups(kernel.roots))


def test_cgroup_exists(kernel: FakeKernel) -> None:
    assert cgroup_exists(kernel.roots, "")
    assert cgroup_exists(kernel.roots, "a.slice/x.service")
    assert cgroup_exists(kernel.roots, "/a.slice/x.service")
    assert not cgroup_exists(kernel.roots, "a.slice/nope.service")
    shutil.rmtree(kernel.cgroup_root / "a.slice" / "x.service")
    assert not cgroup_exists(kernel.roots, "a.slice/x.service")


def test_a_symlink_is_not_a_cgroup(kernel: FakeKernel) -> None:
    os.symlink(kernel.cgroup_root / "a.slice", kernel.cgroup_root / "link.slice")
    assert not cgroup_exists(kernel.roots, "link.slice")


def test_cgroup_exists_refuses_names_that_escape_the_root(kernel: FakeKernel) -> None:
    with pytest.raises(InvalidCgroupName):
        cgroup_exists(kernel.roots, "../proc")
