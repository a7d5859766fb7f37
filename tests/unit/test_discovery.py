"""Target discovery: one walk, every policy's selector, the cgroups never to touch."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence

import pytest

from remediator.core.state import TargetKey
from remediator.daemon.discovery import desired_targets, discover, own_cgroup, selection_by_policy
from remediator.kernel.roots import KernelRoots
from remediator.policy.compiled import (
    CgroupSelector,
    Conditions,
    NodeTarget,
    Policy,
    RateLimit,
    ReclaimAction,
    Rollback,
    Target,
    TriggerSpec,
)
from tests.fakefs import FakeKernel

SPEC = TriggerSpec("some", 150_000, 1_000_000)
NODE_SPEC = TriggerSpec("full", 100_000, 2_000_000)

TREE = [
    "init.scope",
    "system.slice",
    "system.slice/remediator.service",
    "system.slice/web.service",
    "system.slice/db.service",
    "user.slice",
    "user.slice/user-1000.slice",
    "user.slice/user-1000.slice/session-2.scope",
    "machine.slice",
    "machine.slice/ctr.scope",
    "machine.slice/ctr.scope/init.scope",
    "machine.slice/ctr.scope/app.service",
]


def policy(name: str, target: Target, trigger: TriggerSpec = SPEC, enabled: bool = True) -> Policy:
    rung = ReclaimAction(
        fraction=0.25, min_bytes=0, max_bytes=None, timeout_sec=5.0, limits=RateLimit(60.0, 10)
    )
    return Policy(
        name=name,
        source=f"/etc/remediator/policies/{name}.yaml",
        target=target,
        trigger=trigger,
        conditions=Conditions(),
        ladder=(rung,),
        verify_sec=10.0,
        rollback=Rollback(calm_sec=300.0, restore_on_exit=True),
        enabled=enabled,
    )


def select(*include: str, exclude: Sequence[str] = ()) -> CgroupSelector:
    return CgroupSelector(include=tuple(include), exclude=tuple(exclude))


class CountingWalker:
    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self.calls = 0

    def __call__(self, roots: KernelRoots) -> Iterator[str]:
        self.calls += 1
        yield from self.names


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    k = FakeKernel(tmp_path)
    (k.proc_root / "self" / "cgroup").write_text("0::/system.slice/remediator.service\n")
    return k


def cgroups_of(targets: Iterable[TargetKey], policy_name: str) -> List[Optional[str]]:
    return [k.cgroup for k in targets if k.policy == policy_name]


def test_node_policy_targets_the_node_without_walking(kernel: FakeKernel) -> None:
    walker = CountingWalker(TREE)

    targets = desired_targets(kernel.roots, [policy("node", NodeTarget(), NODE_SPEC)], walk=walker)

    assert targets == {TargetKey("node", None): NODE_SPEC.psi}
    assert walker.calls == 0


def test_many_policies_share_one_walk(kernel: FakeKernel) -> None:
    walker = CountingWalker(TREE)
    policies = [policy(f"p{i}", select("system.slice/*")) for i in range(10)]
    policies.append(policy("node", NodeTarget()))

    targets = desired_targets(kernel.roots, policies, walk=walker)

    assert walker.calls == 1
    assert len(targets) == 10 * 2 + 1


def test_cgroup_selected_by_two_policies_is_one_target_per_policy(kernel: FakeKernel) -> None:
    policies = [
        policy("web", select("system.slice/web.service")),
        policy("services", select("system.slice/*.service"), NODE_SPEC),
    ]

    targets = desired_targets(kernel.roots, policies, walk=CountingWalker(TREE))

    assert targets[TargetKey("web", "system.slice/web.service")] == SPEC.psi
    assert targets[TargetKey("services", "system.slice/web.service")] == NODE_SPEC.psi
    assert cgroups_of(targets, "services") == ["system.slice/web.service", "system.slice/db.service"]


def test_double_star_glob_matches_at_any_depth(kernel: FakeKernel) -> None:
    targets = desired_targets(
        kernel.roots, [policy("deep", select("**/*.service"))], walk=CountingWalker(TREE)
    )

    assert cgroups_of(targets, "deep") == [
        "system.slice/web.service",
        "system.slice/db.service",
        "machine.slice/ctr.scope/app.service",
    ]


def test_exclude_globs_remove_cgroups_from_the_selection(kernel: FakeKernel) -> None:
    targets = desired_targets(
        kernel.roots,
        [policy("p", select("system.slice/*", exclude=["system.slice/db.*"]))],
        walk=CountingWalker(TREE),
    )

    assert cgroups_of(targets, "p") == ["system.slice/web.service"]


def test_init_scope_is_never_selected_at_any_depth(kernel: FakeKernel) -> None:
    targets = desired_targets(kernel.roots, [policy("all", select("**"))], walk=CountingWalker(TREE))

    selected = cgroups_of(targets, "all")
    assert "init.scope" not in selected
    assert "machine.slice/ctr.scope/init.scope" not in selected
    assert "machine.slice/ctr.scope" in selected


def test_the_daemons_own_cgroup_is_never_selected(kernel: FakeKernel) -> None:
    targets = desired_targets(
        kernel.roots, [policy("all", select("system.slice/*"))], walk=CountingWalker(TREE)
    )

    assert cgroups_of(targets, "all") == ["system.slice/web.service", "system.slice/db.service"]


def test_the_root_cgroup_is_never_selected(kernel: FakeKernel) -> None:
    targets = desired_targets(kernel.roots, [policy("all", select("**"))], walk=CountingWalker(["", *TREE]))

    assert "" not in cgroups_of(targets, "all")


def test_own_cgroup_is_read_from_the_unified_line_of_a_hybrid_layout(kernel: FakeKernel) -> None:
    (kernel.proc_root / "self" / "cgroup").write_text(
        "12:memory:/system.slice/remediator.service\n1:name=systemd:/system.slice/x.service\n"
        "0::/system.slice/remediator.service\n"
    )

    assert own_cgroup(kernel.roots) == "system.slice/remediator.service"


def test_unreadable_own_cgroup_excludes_nothing_else(kernel: FakeKernel) -> None:
    (kernel.proc_root / "self" / "cgroup").unlink()

    targets = desired_targets(
        kernel.roots, [policy("all", select("system.slice/*"))], walk=CountingWalker(TREE)
    )

    assert own_cgroup(kernel.roots) is None
    assert len(cgroups_of(targets, "all")) == 3


def test_disabled_policy_shows_its_selection_but_is_not_watched(kernel: FakeKernel) -> None:
    policies = [
        policy("off", select("system.slice/*"), enabled=False),
        policy("node-off", NodeTarget(), enabled=False),
    ]

    found = discover(kernel.roots, policies, walk=CountingWalker(TREE))

    assert found.targets == {}
    assert found.selection_by_policy == {"off": ("system.slice/web.service", "system.slice/db.service")}


def test_selection_by_policy_lists_every_cgroup_policy(kernel: FakeKernel) -> None:
    policies = [policy("web", select("system.slice/web.service")), policy("none", select("nothing/*"))]

    selection = selection_by_policy(kernel.roots, policies, walk=CountingWalker(TREE))

    assert selection == {"web": ("system.slice/web.service",), "none": ()}


def test_default_walker_reads_the_cgroup_tree(kernel: FakeKernel) -> None:
    for name in ("system.slice/web.service", "system.slice/remediator.service", "init.scope"):
        kernel.add_cgroup(name)

    targets = desired_targets(kernel.roots, [policy("all", select("**"))])

    assert sorted(k.cgroup or "" for k in targets) == ["system.slice", "system.slice/web.service"]


def test_a_policy_change_of_sustained_time_alone_asks_for_the_same_kernel_trigger(kernel: FakeKernel) -> None:
    # sustained_sec is the core's business: the watcher must not tear down and re-arm for it.
    slow = TriggerSpec("some", 150_000, 1_000_000, sustained_sec=30.0)
    services = select("system.slice/*.service")
    before = desired_targets(kernel.roots, [policy("web", services)], walk=CountingWalker(TREE))
    after = desired_targets(kernel.roots, [policy("web", services, slow)], walk=CountingWalker(TREE))
    assert before
    assert before == after
