"""Valid policies, the shipped defaults, compilation, and the directory loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from remediator.policy.compiled import (
    CgroupSelector,
    Conditions,
    DropCachesAction,
    MemoryHighAction,
    NodeTarget,
    RateLimit,
    ReclaimAction,
    Rollback,
    TriggerSpec,
    VfsCachePressureAction,
)
from remediator.policy.loader import load_policy_dir, load_policy_file, load_policy_text
from remediator.policy.models import MiB, parse_size

REPO = Path(__file__).resolve().parent.parent.parent
VALID_DIR = REPO / "tests" / "fixtures" / "policies" / "valid"
SHIPPED_DIR = REPO / "policies"

MINIMAL = """\
target: {kind: cgroups, include: ["system.slice/*.service"]}
trigger: {pressure: full, stall_ms: 100, window_ms: 2000}
actions: [{kind: reclaim}]
"""


@pytest.mark.parametrize("path", sorted(VALID_DIR.iterdir()), ids=lambda p: p.name)
def test_valid_fixture_loads_without_issues(path: Path) -> None:
    policy, issues = load_policy_file(path)

    assert issues == []
    assert policy is not None
    assert policy.name == path.stem


def test_shipped_policies_load_with_zero_issues() -> None:
    policy_set = load_policy_dir(SHIPPED_DIR)

    assert [str(issue) for issue in policy_set.issues] == []
    assert sorted(p.name for p in policy_set.policies) == ["node", "node-drop-caches", "services-cache"]


def test_shipped_drop_caches_policy_is_off_by_default() -> None:
    policy_set = load_policy_dir(SHIPPED_DIR)
    by_name = {policy.name: policy for policy in policy_set.policies}

    assert by_name["node-drop-caches"].enabled is False
    assert any(isinstance(rung, DropCachesAction) for rung in by_name["node-drop-caches"].ladder)
    assert all(
        not isinstance(rung, DropCachesAction) for policy in policy_set.enabled for rung in policy.ladder
    )


def test_shipped_services_policy_watches_both_kubernetes_cgroup_drivers_and_spares_the_daemon() -> None:
    policy, _ = load_policy_file(SHIPPED_DIR / "services-cache.yaml")
    assert policy is not None
    selector = policy.target
    assert isinstance(selector, CgroupSelector)

    assert selector.matches("system.slice/nginx.service")
    assert selector.matches(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc.scope"
    )
    assert selector.matches("kubepods.slice/kubepods-pod1234.slice/cri-containerd-abc.scope")
    assert selector.matches("kubepods/burstable/pod1234/0123abcd")
    assert selector.matches("kubepods/pod1234/0123abcd")
    assert not selector.matches("system.slice/remediator.service")
    assert not selector.matches("init.scope")
    assert not selector.matches("system.slice")
    assert not selector.matches("kubepods.slice/kubepods-burstable.slice")
    assert not selector.matches("kubepods/burstable/pod1234")


def test_shipped_policies_use_two_second_window_multiples() -> None:
    for policy in load_policy_dir(SHIPPED_DIR).policies:
        assert policy.trigger.window_us % 2_000_000 == 0, policy.name


def test_full_fixture_compiles_every_key_with_units_converted() -> None:
    policy, issues = load_policy_file(VALID_DIR / "full.yaml")
    assert issues == []
    assert policy is not None

    assert policy.target == CgroupSelector(
        include=("system.slice/*.service", "kubepods.slice/**/*.scope", "machine.slice/app-[0-9]?.scope"),
        exclude=("system.slice/remediator.service",),
    )
    assert policy.trigger == TriggerSpec(
        kind="full", stall_us=200_000, window_us=4_000_000, sustained_sec=6.0
    )
    assert policy.conditions == Conditions(0.3, True, 0.9)
    assert policy.ladder == (
        ReclaimAction(0.25, 8 * MiB, 1024 * MiB, 2.5, RateLimit(15.0, 10)),
        MemoryHighAction("current", 0.8, 128 * MiB, 512 * MiB, RateLimit(120.0, 3)),
        VfsCachePressureAction(300, RateLimit(900.0, 1)),
        DropCachesAction(3, RateLimit(3600.0, 1)),
    )
    assert policy.verify_sec == 15.0
    assert policy.rollback == Rollback(calm_sec=120.5, restore_on_exit=False)
    assert policy.allow_node_wide is True
    assert policy.enabled is False
    assert policy.description == "every key written out"


def test_omitted_keys_take_the_documented_defaults() -> None:
    policy, issues = load_policy_text(MINIMAL, "m.yaml", "m")
    assert issues == []
    assert policy is not None

    assert policy.trigger.sustained_sec == 0.0
    assert policy.conditions == Conditions()
    assert policy.ladder == (ReclaimAction(0.5, 16 * MiB, None, 5.0, RateLimit(30.0, 20)),)
    assert policy.verify_sec == 10.0
    assert policy.rollback == Rollback(300.0, True)
    assert policy.allow_node_wide is False
    assert policy.enabled is True


def test_rung_defaults_for_memory_high_vfs_and_drop_caches() -> None:
    text = """\
target: {kind: cgroups, include: ["a/*"]}
trigger: {pressure: full, stall_ms: 100, window_ms: 2000}
actions:
  - {kind: memory_high}
  - {kind: vfs_cache_pressure, value: 150}
  - {kind: drop_caches, mode: 2}
allow_node_wide: true
"""
    policy, issues = load_policy_text(text, "d.yaml", "d")
    assert issues == []
    assert policy is not None

    assert policy.ladder == (
        MemoryHighAction("max", 0.9, 64 * MiB, None, RateLimit(60.0, 6)),
        VfsCachePressureAction(150, RateLimit(600.0, 2)),
        DropCachesAction(2, RateLimit(1800.0, 1)),
    )


def test_node_target_compiles_to_node_target() -> None:
    policy, _ = load_policy_file(VALID_DIR / "node.yaml")

    assert policy is not None
    assert policy.target == NodeTarget()
    assert policy.is_node


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (4096, 4096),
        ("16Mi", 16 * MiB),
        ("16M", 16 * MiB),
        ("1Ki", 1024),
        ("2K", 2048),
        ("1Gi", 1 << 30),
        ("1T", 1 << 40),
        ("1Ti", 1 << 40),
        ("123", 123),
    ],
)
def test_sizes_accept_bytes_and_binary_suffixes(written: object, expected: int) -> None:
    assert parse_size(written) == expected


@pytest.mark.parametrize("written", ["16MB", "16 Mi", "1.5Gi", "16mi", "Mi", "-1Mi", True, 1.5, None])
def test_sizes_refuse_anything_else(written: object) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(written)


def test_policy_source_is_the_path_and_messages_use_the_display_name(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(MINIMAL)

    policy, _ = load_policy_file(path, display_name="policies.d/web.yaml")

    assert policy is not None
    assert policy.source == str(path)
    assert policy.name == "web"


def test_directory_files_are_named_relative_to_the_directory_parent(tmp_path: Path) -> None:
    directory = tmp_path / "policies.d"
    directory.mkdir()
    (directory / "web.yaml").write_text(MINIMAL.replace("stall_ms: 100", "stall_ms: 0"))

    policy_set = load_policy_dir(directory)

    assert [str(issue) for issue in policy_set.issues] == [
        "policies.d/web.yaml:2:27: trigger.stall_ms: must be > 0 (got 0)"
    ]


def test_directory_reads_yaml_and_yml_in_sorted_order_and_skips_other_and_hidden_files(
    tmp_path: Path,
) -> None:
    for name in ("b.yml", "a.yaml", "c.yaml.bak", ".#a.yaml", "README"):
        (tmp_path / name).write_text(MINIMAL)

    policy_set = load_policy_dir(tmp_path)

    assert policy_set.issues == []
    assert [policy.name for policy in policy_set.policies] == ["a", "b"]
    assert [path.name for path in policy_set.files] == ["a.yaml", "b.yml"]


def test_two_files_with_the_same_policy_name_are_both_refused(tmp_path: Path) -> None:
    directory = tmp_path / "policies.d"
    directory.mkdir()
    (directory / "web.yaml").write_text(MINIMAL)
    (directory / "web.yml").write_text(MINIMAL)

    policy_set = load_policy_dir(directory)

    assert policy_set.policies == ()
    assert [str(issue) for issue in policy_set.issues] == [
        "policies.d/web.yaml:1:1: (document): policy 'web' is also defined by policies.d/web.yml: "
        "keep one file",
        "policies.d/web.yml:1:1: (document): policy 'web' is also defined by policies.d/web.yaml: "
        "keep one file",
    ]


def test_one_bad_file_does_not_keep_the_others_from_loading(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(MINIMAL)
    (tmp_path / "bad.yaml").write_text("target: [\n")

    policy_set = load_policy_dir(tmp_path)

    assert [policy.name for policy in policy_set.policies] == ["good"]
    assert len(policy_set.issues) == 1


def test_missing_directory_is_an_issue(tmp_path: Path) -> None:
    policy_set = load_policy_dir(tmp_path / "nope")

    assert [str(issue) for issue in policy_set.issues] == [
        f"{tmp_path / 'nope'}:1:1: (file): policy directory does not exist"
    ]
    assert policy_set.policies == ()


def test_empty_directory_is_an_issue(tmp_path: Path) -> None:
    policy_set = load_policy_dir(tmp_path)

    assert [str(issue) for issue in policy_set.issues] == [
        f"{tmp_path}:1:1: (file): no policy files (*.yaml, *.yml): nothing would be watched"
    ]


def test_a_file_given_as_the_directory_is_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(MINIMAL)

    policy_set = load_policy_dir(path)

    assert [issue.message for issue in policy_set.issues] == ["not a directory"]


def test_missing_file_is_an_issue(tmp_path: Path) -> None:
    policy, issues = load_policy_file(tmp_path / "gone.yaml", display_name="policies.d/gone.yaml")

    assert policy is None
    assert [str(issue) for issue in issues] == [
        "policies.d/gone.yaml:1:1: (file): cannot read: No such file or directory"
    ]


def test_a_dangling_symlink_is_an_issue(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").symlink_to(tmp_path / "elsewhere.yaml")

    policy_set = load_policy_dir(tmp_path)

    assert [issue.message for issue in policy_set.issues] == ["cannot read: No such file or directory"]


def test_a_directory_named_like_a_policy_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "odd.yaml").mkdir()

    _, issues = load_policy_file(tmp_path / "odd.yaml", display_name="odd.yaml")

    assert [str(issue) for issue in issues] == ["odd.yaml:1:1: (file): not a regular file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_unreadable_file_is_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(MINIMAL)
    path.chmod(0)

    _, issues = load_policy_file(path, display_name="secret.yaml")

    assert [str(issue) for issue in issues] == ["secret.yaml:1:1: (file): cannot read: Permission denied"]


def test_a_policy_name_that_would_not_be_a_plain_word_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "web app.yaml"
    path.write_text(MINIMAL)

    policy, issues = load_policy_file(path, display_name="web app.yaml")

    assert policy is None
    assert issues[0].key_path == "(file)"
    assert "'web app'" in issues[0].message


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * (2 << 20) + "\n" + MINIMAL)

    policy, issues = load_policy_file(path, display_name="huge.yaml")

    assert policy is None
    assert issues[0].message.startswith("too large")
