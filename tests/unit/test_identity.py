"""Identity from a cgroup path and the kubelet's log directories: every shape, and hostile names."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.clock import SystemClock
from remediator.identity import (
    ContainerRuntime,
    Identity,
    IdentityResolver,
    QosClass,
    decode_unit_name,
    parse_cgroup,
)
from remediator.pod_logs import PodLogIndex, parse_container_link, parse_pod_log_dir

UID = "0b8c6e2a-1f3d-4c5e-9a7b-1234567890ab"
UID_ = UID.replace("-", "_")
STATIC_UID = "6c8a2d0cb6c1b5dd1e9e3c0e6bc8b7f1"  # a static pod's: the MD5 of its manifest
CID = "3f9a0c4e" * 8
CID2 = "9d1e7b22" * 8

BURSTABLE_POD = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"

# cgroup -> the fields the path alone gives (everything else None / False).
PATHS: Dict[str, Dict[str, object]] = {
    # systemd units
    "system.slice/nginx.service": {"unit": "nginx.service"},
    "system.slice/docker.service": {"unit": "docker.service"},
    "system.slice/system-getty.slice/getty@tty1.service": {"unit": "getty@tty1.service"},
    "system.slice/system-serial\\x2dgetty.slice/serial-getty@ttyS0.service": {
        "unit": "serial-getty@ttyS0.service"
    },
    "system.slice/system-postgresql.slice/postgresql@15\\x2dmain.service": {
        "unit": "postgresql@15-main.service"
    },
    "system.slice/run-r4f0b2a8b.scope": {"unit": "run-r4f0b2a8b.scope"},
    "init.scope": {"unit": "init.scope"},
    "user.slice/user-1000.slice/session-3.scope": {"unit": "session-3.scope"},
    # A delegated subtree of a unit is still that unit's.
    "system.slice/containerd.service/payload": {"unit": "containerd.service"},
    "user.slice/user-1000.slice/user@1000.service/app.slice/x.service": {"unit": "user@1000.service"},
    # Slices alone are no unit.
    "system.slice": {},
    "": {},
    # systemd driver, three runtimes, three classes
    f"{BURSTABLE_POD}/cri-containerd-{CID}.scope": {
        "unit": f"cri-containerd-{CID}.scope",
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.BURSTABLE,
        "container_id": CID,
        "container_runtime": ContainerRuntime.CONTAINERD,
    },
    f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope": {
        "unit": f"crio-{CID}.scope",
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.BESTEFFORT,
        "container_id": CID,
        "container_runtime": ContainerRuntime.CRIO,
    },
    f"kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope": {
        "unit": f"docker-{CID}.scope",
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.GUARANTEED,
        "container_id": CID,
        "container_runtime": ContainerRuntime.DOCKER,
    },
    # kubelet --cgroup-root=/kubelet (kind): the slice chain starts higher
    f"kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
    f"kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope": {
        "unit": f"cri-containerd-{CID}.scope",
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.BURSTABLE,
        "container_id": CID,
        "container_runtime": ContainerRuntime.CONTAINERD,
    },
    # a static pod's UID
    f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/"
    f"cri-containerd-{CID}.scope": {
        "unit": f"cri-containerd-{CID}.scope",
        "kubernetes": True,
        "pod_uid": STATIC_UID,
        "qos_class": QosClass.BURSTABLE,
        "container_id": CID,
        "container_runtime": ContainerRuntime.CONTAINERD,
    },
    # pod level, class level, the kubepods cgroup itself
    BURSTABLE_POD: {"kubernetes": True, "pod_uid": UID, "qos_class": QosClass.BURSTABLE},
    "kubepods.slice/kubepods-besteffort.slice": {"kubernetes": True, "qos_class": QosClass.BESTEFFORT},
    "kubepods.slice": {"kubernetes": True},
    # CRI-O's conmon sits in the pod, and is no container
    f"kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope": {
        "unit": f"crio-conmon-{CID}.scope",
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.GUARANTEED,
    },
    # a cgroup a container made inside itself is still that container's
    f"{BURSTABLE_POD}/cri-containerd-{CID}.scope/init": {
        "unit": f"cri-containerd-{CID}.scope",
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.BURSTABLE,
        "container_id": CID,
        "container_runtime": ContainerRuntime.CONTAINERD,
    },
    # cgroupfs driver
    f"kubepods/burstable/pod{UID}/{CID}": {
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.BURSTABLE,
        "container_id": CID,
    },
    f"kubepods/besteffort/pod{UID}/{CID}": {
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.BESTEFFORT,
        "container_id": CID,
    },
    f"kubepods/pod{UID}/{CID}": {
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.GUARANTEED,
        "container_id": CID,
    },
    f"kubepods/burstable/pod{UID}/crio-{CID}": {
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.BURSTABLE,
        "container_id": CID,
        "container_runtime": ContainerRuntime.CRIO,
    },
    f"kubelet/kubepods/burstable/pod{UID}/{CID}": {
        "kubernetes": True,
        "pod_uid": UID,
        "qos_class": QosClass.BURSTABLE,
        "container_id": CID,
    },
    f"kubepods/burstable/pod{UID}": {"kubernetes": True, "pod_uid": UID, "qos_class": QosClass.BURSTABLE},
    "kubepods/burstable": {"kubernetes": True, "qos_class": QosClass.BURSTABLE},
    "kubepods": {"kubernetes": True},
}

# Malformed or hostile: none of these is a pod, whatever else they are.
NOT_A_POD: Dict[str, Dict[str, object]] = {
    # a delegated subtree imitating another pod's slice chain
    f"user.slice/user-1000.slice/user@1000.service/kubepods.slice/kubepods-pod{UID_}.slice/"
    f"cri-containerd-{CID}.scope": {"unit": "user@1000.service"},
    f"system.slice/containerd.service/kubepods/burstable/pod{UID}/{CID}": {"unit": "containerd.service"},
    # a slice that does not extend its parent's name is not systemd's
    f"kubepods.slice/kubepods-burstable.slice/other-burstable-pod{UID_}.slice": {
        "kubernetes": True,
        "qos_class": QosClass.BURSTABLE,
    },
    # cgroupfs kubepods too deep, or under a unit
    f"a/b/kubepods/pod{UID}/{CID}": {},
    f"system.slice/kubepods/pod{UID}/{CID}": {},
    # UIDs that are not UUID-shaped, or spelled for the other driver
    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnotauid.slice": {
        "kubernetes": True,
        "qos_class": QosClass.BURSTABLE,
    },
    f"kubepods/burstable/pod{UID_}/{CID}": {"kubernetes": True, "qos_class": QosClass.BURSTABLE},
    f"kubepods/burstable/pod{UID.upper()}/{CID}": {"kubernetes": True, "qos_class": QosClass.BURSTABLE},
    f"kubepods/pod{UID}x/{CID}": {"kubernetes": True},
    f"kubepods.slice/kubepods-pod{UID_[:-1]}.slice/cri-containerd-{CID}.scope": {
        "unit": f"cri-containerd-{CID}.scope",
        "kubernetes": True,
    },
    f"kubepods/unknownclass/pod{UID}/{CID}": {"kubernetes": True},
    # empty, dot and dot-dot components
    f"kubepods//pod{UID}/{CID}": {},
    f"kubepods/../kubepods/pod{UID}/{CID}": {},
    "system.slice/./x.service": {},
}

# Container components that are not a container id: the pod is known, the container is not.
NOT_A_CONTAINER = [
    f"{BURSTABLE_POD}/cri-containerd-{CID[:-1]}.scope",
    f"{BURSTABLE_POD}/cri-containerd-{CID.upper()}.scope",
    f"{BURSTABLE_POD}/podman-{CID}.scope",
    f"{BURSTABLE_POD}/cri-containerd-{CID}.service",
    f"{BURSTABLE_POD}/cri-containerd-{CID}.scope\n",
    f"kubepods/burstable/pod{UID}/{CID}0",
    f"kubepods/burstable/pod{UID}/runc-{CID}",
]


def expected(cgroup: str, fields: Dict[str, object]) -> Identity:
    return replace(Identity(cgroup=cgroup), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cgroup", "fields"), PATHS.items(), ids=list(PATHS))
def test_the_path_alone_gives_the_unit_pod_class_and_container(
    cgroup: str, fields: Dict[str, object]
) -> None:
    assert parse_cgroup(cgroup) == expected(cgroup, fields)


@pytest.mark.parametrize(("cgroup", "fields"), NOT_A_POD.items(), ids=list(NOT_A_POD))
def test_malformed_and_hostile_paths_name_no_pod(cgroup: str, fields: Dict[str, object]) -> None:
    assert parse_cgroup(cgroup) == expected(cgroup, fields)


@pytest.mark.parametrize("cgroup", NOT_A_CONTAINER)
def test_a_malformed_container_component_names_the_pod_but_no_container(cgroup: str) -> None:
    identity = parse_cgroup(cgroup)

    assert identity.pod_uid == UID
    assert identity.container_id is None
    assert identity.container_runtime is None


def test_a_leading_slash_as_proc_pid_cgroup_prints_it_is_the_same_cgroup() -> None:
    cgroup = f"/kubepods/burstable/pod{UID}/{CID}"

    assert parse_cgroup(cgroup).pod_uid == UID


@pytest.mark.parametrize(
    ("written", "decoded"),
    [
        ("serial\\x2dgetty@ttyS0.service", "serial-getty@ttyS0.service"),
        ("a\\x2fb.service", "a/b.service"),
        ("caf\\xc3\\xa9.service", "café.service"),
        # would decode to a newline or an escape character, or is not UTF-8: left as written
        ("evil\\x0aMESSAGE_ID=x.service", "evil\\x0aMESSAGE_ID=x.service"),
        ("bell\\x1b[31m.service", "bell\\x1b[31m.service"),
        ("bad\\xff.service", "bad\\xff.service"),
        ("plain%41.service", "plain%41.service"),
        ("trailing\\x2", "trailing\\x2"),
    ],
)
def test_systemd_escapes_are_decoded_only_to_printable_text(written: str, decoded: str) -> None:
    assert decode_unit_name(written) == decoded


# ---------------------------------------------------------------- names from the log directories


def make_pod_log(root: Path, namespace: str, pod: str, uid: str, *containers: str) -> Path:
    pod_dir = root / "var/log/pods" / f"{namespace}_{pod}_{uid}"
    for container in containers:
        (pod_dir / container).mkdir(parents=True, exist_ok=True)
        (pod_dir / container / "0.log").write_text("")
    pod_dir.mkdir(parents=True, exist_ok=True)
    return pod_dir


def link_container(root: Path, namespace: str, pod: str, uid: str, container: str, cid: str) -> None:
    links = root / "var/log/containers"
    links.mkdir(parents=True, exist_ok=True)
    target = root / "var/log/pods" / f"{namespace}_{pod}_{uid}" / container / "0.log"
    os.symlink(target, links / f"{pod}_{namespace}_{container}-{cid}.log")


def resolver(root: Path) -> IdentityResolver:
    return IdentityResolver(root=root, clock=SystemClock())


CONTAINERD_PATH = f"{BURSTABLE_POD}/cri-containerd-{CID}.scope"


def test_namespace_pod_and_container_come_from_the_kubelets_log_directories(tmp_path: Path) -> None:
    make_pod_log(tmp_path, "shop", "web-7d4b9c8f6-x2k9p", UID, "nginx", "istio-proxy", "istio-init")
    link_container(tmp_path, "shop", "web-7d4b9c8f6-x2k9p", UID, "nginx", CID)
    link_container(tmp_path, "shop", "web-7d4b9c8f6-x2k9p", UID, "istio-proxy", CID2)

    identity = resolver(tmp_path).identify(CONTAINERD_PATH)

    assert (identity.pod_namespace, identity.pod_name, identity.container_name) == (
        "shop",
        "web-7d4b9c8f6-x2k9p",
        "nginx",
    )
    assert identity.readable_name == "shop/web-7d4b9c8f6-x2k9p/nginx"
    assert identity.journal_fields() == {
        "UNIT": f"cri-containerd-{CID}.scope",
        "POD_UID": UID,
        "QOS_CLASS": "burstable",
        "CONTAINER_ID": CID,
        "CONTAINER_RUNTIME": "containerd",
        "POD_NAMESPACE": "shop",
        "POD_NAME": "web-7d4b9c8f6-x2k9p",
        "CONTAINER_NAME": "nginx",
    }


def test_the_sandbox_of_a_one_container_pod_gets_no_container_name(tmp_path: Path) -> None:
    # The pause container has a cgroup of its own and no log directory: the pod's only container
    # directory is another container's.
    make_pod_log(tmp_path, "shop", "cache-0", UID, "redis")
    link_container(tmp_path, "shop", "cache-0", UID, "redis", CID2)

    sandbox = resolver(tmp_path).identify(CONTAINERD_PATH)

    assert (sandbox.pod_namespace, sandbox.pod_name, sandbox.container_name) == ("shop", "cache-0", None)
    assert sandbox.readable_name == "shop/cache-0"


def test_a_link_whose_target_is_another_pods_directory_names_no_container(tmp_path: Path) -> None:
    other = "11111111-2222-3333-4444-555555555555"
    make_pod_log(tmp_path, "shop", "web-0", UID, "nginx")
    make_pod_log(tmp_path, "shop", "web-0", other, "nginx")
    link_container(tmp_path, "shop", "web-0", other, "nginx", CID)

    assert resolver(tmp_path).identify(CONTAINERD_PATH).container_name is None


def test_without_log_directories_the_path_identity_stands(tmp_path: Path) -> None:
    identity = resolver(tmp_path).identify(CONTAINERD_PATH)

    assert identity == parse_cgroup(CONTAINERD_PATH)
    assert identity.readable_name == f"cri-containerd-{CID}.scope"


def test_readable_name_is_the_cgroup_when_nothing_else_is_known() -> None:
    assert parse_cgroup(f"kubepods/burstable/pod{UID}/{CID}").readable_name == (
        f"kubepods/burstable/pod{UID}/{CID}"
    )
    assert parse_cgroup("").readable_name == "/"


@pytest.mark.parametrize(
    "name",
    [
        f"kube_system_x_{UID}",  # four fields
        f"Shop_web_{UID}",  # namespace not a DNS label
        f"shop_-web_{UID}",  # pod name not a DNS subdomain
        f"shop_web..x_{UID}",
        f"shop_web_{UID_}",  # UID not in the dashed form
        f"shop_web_{UID}\n",
        f"{'a' * 64}_web_{UID}",  # namespace longer than 63
        f"shop_{'a' * 254}_{UID}",  # pod name longer than 253
        "shop_web",
        "",
    ],
)
def test_log_directories_that_do_not_validate_are_ignored(name: str) -> None:
    assert parse_pod_log_dir(name) is None


def test_a_static_pods_log_directory_is_read() -> None:
    parsed = parse_pod_log_dir(f"kube-system_kube-apiserver-node1_{STATIC_UID}")

    assert parsed is not None
    assert parsed[0] == STATIC_UID
    assert (parsed[1].namespace, parsed[1].name) == ("kube-system", "kube-apiserver-node1")


@pytest.mark.parametrize(
    ("name", "target"),
    [
        # the kubelet cut a long name, and the id with it
        (f"web_shop_nginx-{CID[:40]}.log", f"/var/log/pods/shop_web_{UID}/nginx/0.log"),
        # names disagree between the link and its target
        (f"web_shop_nginx-{CID}.log", f"/var/log/pods/shop_web_{UID}/redis/0.log"),
        (f"web_other_nginx-{CID}.log", f"/var/log/pods/shop_web_{UID}/nginx/0.log"),
        (f"web_shop_nginx-{CID}.log", f"/var/log/pods/shop_web_{UID}/nginx"),
        (f"web_shop_nginx-{CID}.log", "0.log"),
        (f"web_shop_Nginx-{CID}.log", f"/var/log/pods/shop_web_{UID}/Nginx/0.log"),
        (f"web_shop_nginx-{CID}.txt", f"/var/log/pods/shop_web_{UID}/nginx/0.log"),
    ],
)
def test_container_links_that_are_not_reliable_are_ignored(name: str, target: str) -> None:
    assert parse_container_link(name, target) is None


def test_a_new_pod_is_found_by_re_reading_the_changed_directory_once(tmp_path: Path) -> None:
    (tmp_path / "var/log/pods").mkdir(parents=True)
    index = PodLogIndex(tmp_path / "var/log/pods", clock=SystemClock())
    assert index.pod(UID) is None

    make_pod_log(tmp_path, "shop", "web-0", UID, "nginx")
    found = index.pod(UID)

    assert found is not None and (found.namespace, found.name) == ("shop", "web-0")
    reads = index.reads
    for _ in range(10):
        assert index.pod(UID) == found
    assert index.reads == reads, "a hit reads no directory"


class LateClock(SystemClock):
    """Wall time well after every mtime in the test: the coarse-timestamp margin has passed."""

    def wall(self) -> float:
        return super().wall() + 3600.0


def test_a_miss_on_an_unchanged_directory_reads_nothing(tmp_path: Path) -> None:
    make_pod_log(tmp_path, "shop", "web-0", UID, "nginx")
    index = PodLogIndex(tmp_path / "var/log/pods", clock=LateClock())
    missing = "99999999-9999-4999-9999-999999999999"

    assert index.pod(missing) is None
    reads = index.reads
    for _ in range(100):
        assert index.pod(missing) is None
    assert index.reads == reads


def test_the_cache_is_bounded_but_keeps_the_pod_asked_for(tmp_path: Path) -> None:
    uids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(20)]
    for i, uid in enumerate(uids):
        make_pod_log(tmp_path, "ns", f"pod-{i}", uid, "c")
    index = PodLogIndex(tmp_path / "var/log/pods", clock=SystemClock(), max_pods=5)

    found = index.pod(uids[-1])

    assert found is not None and found.name == "pod-19"
    assert len(index._pods.entries) <= 6


# ---------------------------------------------------------------- never raises


def names() -> st.SearchStrategy[str]:
    piece = st.one_of(
        st.text(max_size=20),
        st.sampled_from(
            [
                "kubepods",
                "kubepods.slice",
                "kubepods-burstable.slice",
                f"kubepods-burstable-pod{UID_}.slice",
                f"kubepods-pod{UID_}.slice",
                f"pod{UID}",
                "burstable",
                "besteffort",
                f"cri-containerd-{CID}.scope",
                f"crio-{CID}",
                CID,
                "system.slice",
                "x\\x2dy.service",
                "\\x",
                "..",
                "",
            ]
        ),
    )
    return st.lists(piece, max_size=7).map("/".join)


@settings(max_examples=500, deadline=None)
@given(names())
def test_parsing_any_path_never_raises_and_names_a_uuid_shaped_pod_only(cgroup: str) -> None:
    identity = parse_cgroup(cgroup)

    assert identity.cgroup == cgroup
    assert isinstance(identity.readable_name, str)
    for key, value in identity.journal_fields().items():
        assert key.isupper() and value
    if identity.pod_uid is not None:
        assert identity.kubernetes and identity.qos_class is not None
        assert len(identity.pod_uid) in (32, 36)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=120))
def test_parsing_any_log_entry_never_raises(name: str, target: str) -> None:
    parse_pod_log_dir(name)
    parse_container_link(name, target)
    decode_unit_name(name)


def test_hostile_log_directories_never_raise_nor_name_a_pod(tmp_path: Path) -> None:
    pods = tmp_path / "var/log/pods"
    pods.mkdir(parents=True)
    (pods / f"shop_web_{UID}").write_text("a file, not a directory")
    os.symlink("/etc", pods / f"evil_link_{UID}")
    (pods / f"bad\nname_web_{UID}").mkdir()
    links = tmp_path / "var/log/containers"
    links.mkdir()
    os.symlink(f"/nowhere/shop_web_{UID}/nginx/0.log\n", links / f"web_shop_nginx-{CID}.log")
    (links / f"web_shop_redis-{CID2}.log").write_text("not a link")

    identity = resolver(tmp_path).identify(CONTAINERD_PATH)

    assert (identity.pod_namespace, identity.pod_name, identity.container_name) == (None, None, None)


def test_an_unreadable_log_root_is_no_identity_and_no_error(tmp_path: Path) -> None:
    blocker = tmp_path / "var"
    blocker.write_text("var is a file here")

    identity: Optional[Identity] = resolver(tmp_path).identify(CONTAINERD_PATH)

    assert identity == parse_cgroup(CONTAINERD_PATH)
