"""``target.kubernetes``: validation with located errors, compilation, and what it selects."""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

import pytest

from remediator.identity import Identity, QosClass, parse_cgroup
from remediator.policy.compiled import CgroupSelector, KubernetesSelector
from remediator.policy.loader import load_policy_text

UID_ = "0b8c6e2a_1f3d_4c5e_9a7b_1234567890ab"
CID = "3f9a0c4e" * 8
BURSTABLE = (
    f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope"
)
BESTEFFORT = BURSTABLE.replace("burstable", "besteffort")
GUARANTEED = f"kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"
SERVICE = "system.slice/nginx.service"


def policy_text(kubernetes: str) -> str:
    return (
        "target:\n"
        "  kind: cgroups\n"
        '  include: ["system.slice/*.service", "kubepods.slice/**/*.scope"]\n'
        f"  kubernetes: {kubernetes}\n"
        "trigger: {pressure: full, stall_ms: 100, window_ms: 2000}\n"
        "actions: [{kind: reclaim}]\n"
    )


def selector(kubernetes: str) -> CgroupSelector:
    policy, issues = load_policy_text(policy_text(kubernetes), "k.yaml", "k")
    assert not issues, [str(issue) for issue in issues]
    assert policy is not None and isinstance(policy.target, CgroupSelector)
    return policy.target


def issues_of(kubernetes: str) -> List[str]:
    policy, issues = load_policy_text(policy_text(kubernetes), "k.yaml", "k")
    assert policy is None
    return [str(issue) for issue in issues]


def in_namespace(cgroup: str, namespace: Optional[str]) -> Identity:
    return replace(parse_cgroup(cgroup), pod_namespace=namespace, pod_name="web-0" if namespace else None)


def test_the_selection_compiles_to_classes_and_namespace_sets() -> None:
    compiled = selector(
        "{qos: [burstable, besteffort], namespaces: [shop], exclude_namespaces: [kube-system]}"
    )

    assert compiled.kubernetes == KubernetesSelector(
        qos=frozenset({QosClass.BURSTABLE, QosClass.BESTEFFORT}),
        namespaces=frozenset({"shop"}),
        exclude_namespaces=frozenset({"kube-system"}),
    )


def test_a_policy_without_the_key_narrows_nothing() -> None:
    policy, _ = load_policy_text(policy_text("{}").replace("  kubernetes: {}\n", ""), "k.yaml", "k")

    assert policy is not None and isinstance(policy.target, CgroupSelector)
    assert policy.target.kubernetes is None
    assert policy.target.selects(in_namespace(GUARANTEED, "kube-system"))


@pytest.mark.parametrize(
    ("cgroup", "selected"),
    [(BURSTABLE, True), (BESTEFFORT, True), (GUARANTEED, False), (SERVICE, True)],
)
def test_qos_selects_classes_and_leaves_services_to_the_globs(cgroup: str, selected: bool) -> None:
    compiled = selector("{qos: [burstable, besteffort]}")

    assert compiled.selects(parse_cgroup(cgroup)) is selected


@pytest.mark.parametrize(
    ("namespace", "selected"),
    [("shop", True), ("kube-system", False), ("monitoring", True), (None, False)],
)
def test_exclude_namespaces_refuses_them_and_an_unknown_namespace(
    namespace: Optional[str], selected: bool
) -> None:
    compiled = selector("{exclude_namespaces: [kube-system]}")

    assert compiled.selects(in_namespace(BURSTABLE, namespace)) is selected


@pytest.mark.parametrize(("namespace", "selected"), [("shop", True), ("payments", False), (None, False)])
def test_namespaces_select_only_pods_known_to_be_in_them(namespace: Optional[str], selected: bool) -> None:
    compiled = selector("{namespaces: [shop]}")

    assert compiled.selects(in_namespace(BURSTABLE, namespace)) is selected


def test_the_class_cgroups_have_no_namespace_so_a_namespace_selection_skips_them() -> None:
    compiled = CgroupSelector(
        include=("kubepods.slice/*",), kubernetes=KubernetesSelector(exclude_namespaces=frozenset({"x"}))
    )

    assert not compiled.selects(parse_cgroup("kubepods.slice/kubepods-burstable.slice"))


def test_the_globs_still_decide_first() -> None:
    compiled = selector("{qos: [burstable]}")

    assert not compiled.selects(parse_cgroup("user.slice/user-1000.slice/session-3.scope"))


@pytest.mark.parametrize(
    ("kubernetes", "expected"),
    [
        (
            "{qos: [burstable, bestefort]}",
            "k.yaml:4:33: target.kubernetes.qos[1]: must be 'guaranteed', 'burstable' or 'besteffort' "
            "(got 'bestefort')",
        ),
        ("{qos: burstable}", "k.yaml:4:16: target.kubernetes.qos: must be a list (got 'burstable')"),
        ("{qos: []}", "k.yaml:4:16: target.kubernetes.qos: must not be empty"),
        ("{namespaces: []}", "k.yaml:4:16: target.kubernetes.namespaces: must not be empty"),
        (
            "{namespaces: [Kube_System]}",
            "k.yaml:4:29: target.kubernetes.namespaces[0]: not a Kubernetes namespace name: lower-case "
            "letters, digits and '-', at most 63, starting and ending with a letter or digit "
            "(got 'Kube_System')",
        ),
        (
            "{namespaces: [shop], exclude_namespaces: [kube-system, shop]}",
            "k.yaml:4:70: target.kubernetes.exclude_namespaces[1]: 'shop' is also in namespaces: "
            "select it or exclude it",
        ),
        ("{pods: [web]}", "k.yaml:4:16: target.kubernetes.pods: unknown key"),
    ],
)
def test_mistakes_are_located_errors(kubernetes: str, expected: str) -> None:
    found = issues_of(kubernetes)

    assert any(issue.startswith(expected) for issue in found), found


def test_a_node_policy_cannot_select_pods() -> None:
    text = (
        "target: {kind: node, kubernetes: {qos: [burstable]}}\n"
        "trigger: {pressure: full, stall_ms: 100, window_ms: 2000}\n"
        "actions: [{kind: vfs_cache_pressure, value: 200}]\n"
    )
    policy, issues = load_policy_text(text, "n.yaml", "n")

    assert policy is None
    assert any("target.kubernetes: unknown key" in str(issue) for issue in issues), issues


def test_the_schema_names_every_qos_class_the_identity_knows() -> None:
    from remediator.policy.models import KubernetesSelectionModel

    schema = KubernetesSelectionModel.model_json_schema()
    listed = schema["properties"]["qos"]["anyOf"][0]["items"]["enum"]

    assert sorted(listed) == sorted(qos.value for qos in QosClass)
