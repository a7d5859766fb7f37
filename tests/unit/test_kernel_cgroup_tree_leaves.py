"""The walk does not list leaf cgroups: their link count (2: no subdirectories) says they have none.

Listing a cgroup directory reads all its interface-file entries; the daemon
walks the tree every rescan_interval_sec, and most cgroups are leaves, so this
is most of its idle cost at a thousand cgroups (measured in bench/cost).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List

import pytest

from remediator.kernel import cgroup_tree
from remediator.kernel.cgroup_tree import walk_cgroups
from tests.fakefs import FakeKernel

NAMES = ("a.slice", "a.slice/x.service", "a.slice/y.service", "b.slice", "b.slice/z.scope", "c.scope")


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    k = FakeKernel(tmp_path)
    for name in NAMES:
        k.add_cgroup(name)
    return k


def _record_listings(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    listed: List[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: Any) -> Any:
        listed.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    return listed


def test_walk_lists_only_cgroups_that_have_child_cgroups(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = _record_listings(monkeypatch)

    assert list(walk_cgroups(kernel.roots)) == sorted(NAMES)
    root = kernel.cgroup_root
    assert sorted(listed) == sorted([str(root), str(root / "a.slice"), str(root / "b.slice")])


def test_a_leaf_that_gains_a_child_is_listed_at_the_next_walk(kernel: FakeKernel) -> None:
    assert "c.scope/new" not in list(walk_cgroups(kernel.roots))
    kernel.add_cgroup("c.scope/new")

    assert "c.scope/new" in list(walk_cgroups(kernel.roots))


def test_without_usable_link_counts_every_cgroup_is_listed_and_the_walk_is_the_same(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a filesystem whose directories do not count subdirectories (btrfs says 1).
    monkeypatch.setattr(cgroup_tree, "_LEAF_LINK_COUNT", -1)
    listed = _record_listings(monkeypatch)

    assert list(walk_cgroups(kernel.roots)) == sorted(NAMES)
    assert len(listed) == 1 + len(NAMES)
