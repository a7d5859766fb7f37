"""Who a cgroup belongs to: its systemd unit, or its Kubernetes pod and container.

Parsed from the cgroup's path (relative to the cgroup root) and, for the
names of a pod and its container, from the kubelet's own log directories on
the node. No API is called: the daemon runs on every node, the API server may
be the thing under pressure, and a path is what every record already carries.

Path shapes (``<uid>`` is the pod UID; ``<id>`` a 64-hex container id)::

    systemd unit     system.slice/nginx.service, system.slice/system-getty.slice/getty@tty1.service,
                     init.scope, system.slice/foo.service/child (a delegated subtree: still foo.service)
    systemd driver   kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice/<rt>-<id>.scope
                     kubepods.slice/kubepods-pod<uid with _>.slice/<rt>-<id>.scope          (guaranteed)
                     with <rt> cri-containerd, crio or docker
    cgroupfs driver  kubepods/<qos>/pod<uid>/<id>, kubepods/pod<uid>/<id> (guaranteed); <id> may carry the
                     runtime's prefix (crio-<id>)

**Anchoring (never a wrong pod).** Any delegated subtree's owner can ``mkdir``
a cgroup named like another pod's (``user.slice/user-1000.slice/user@1000.service/
kubepods.slice/kubepods-pod<victim>.slice``). A Kubernetes identity is therefore
read only from a kubepods hierarchy anchored where only root can create it:

- systemd driver: every component from the root down to the pod is a slice
  whose name extends its parent's (``a.slice/a-b.slice/a-b-c.slice``), which
  is how systemd names nested slices. systemd delegates only services and
  scopes, never slices, so such a chain is systemd's own; the kubelet's
  ``--cgroup-root`` may put ``kubepods`` deeper (``kubelet.slice/kubelet-kubepods.slice``).
- cgroupfs driver: ``kubepods`` at the top, or under one top-level directory
  that is not a systemd unit (the kubelet's ``--cgroup-root``, e.g. ``kubelet/kubepods``).

The first anchor from the root wins, so a container cannot claim another pod
by nesting a kubepods-shaped tree inside itself. A pod UID must have the
shape of a UUID (``8-4-4-4-12`` hex; with ``_`` for ``-`` in the systemd
driver, which uses ``-`` to nest slices) or be 32 hex digits: the UID the
kubelet gives a static pod (an MD5 of its manifest). Anything else is not a pod.

**Names from /var/log/pods.** The kubelet keeps ``<pods_log_dir>/<namespace>_<pod>_<uid>/
<container>/<restart>.log``. Namespace and container names are DNS labels and
pod names DNS subdomains, none contains ``_``, so the directory name splits in
exactly three; entries that do not validate are ignored. The log files are
named by restart count, not by container id, so the container's name comes
from the kubelet's other directory, ``/var/log/containers``: one symlink per
container, ``<pod>_<namespace>_<container>-<id>.log``, pointing at that
container's log in /var/log/pods. A container is named only when such a link
carries its full 64-hex id (the kubelet cuts names longer than 255 bytes,
which can cut the id) and its target is in the same pod's directory, under
the same container name. The pod's single container directory is NOT taken
as the container's name: the pod's sandbox (pause) container has a cgroup of
its own and no log directory, so in a one-container pod the sandbox would get
the other container's name.

Nothing here raises on a malformed or hostile path or directory entry: an
unrecognised shape is simply not identified (``Identity(cgroup)``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from remediator.clock import Clock
from remediator.k8s_names import canonical_pod_uid
from remediator.pod_logs import DEFAULT_MAX_PODS, PodLogIndex


class QosClass(str, enum.Enum):
    """The pod's Kubernetes QoS class, as the kubelet names its cgroups."""

    GUARANTEED = "guaranteed"
    BURSTABLE = "burstable"
    BESTEFFORT = "besteffort"


class ContainerRuntime(str, enum.Enum):
    """The runtime that made a container's cgroup; values are the scheme of the pod's
    ``status.containerStatuses[].containerID`` (``containerd://<id>``), so a record can be
    matched to ``kubectl get pod -o yaml``."""

    CONTAINERD = "containerd"
    CRIO = "cri-o"
    DOCKER = "docker"


# The prefix each runtime gives its container cgroups (systemd scopes and cgroupfs directories).
_RUNTIME_PREFIXES: Dict[str, ContainerRuntime] = {
    "cri-containerd": ContainerRuntime.CONTAINERD,
    "crio": ContainerRuntime.CRIO,
    "docker": ContainerRuntime.DOCKER,
}

_HEX64 = "[0-9a-f]{64}"
_SCOPE_CONTAINER = re.compile(r"(cri-containerd|crio|docker)-(" + _HEX64 + r")\.scope\Z")
_CGROUPFS_CONTAINER = re.compile(r"(?:(cri-containerd|crio|docker)-)?(" + _HEX64 + r")\Z")


# systemd unit names: ASCII letters, digits, ":-_.\" and "@", at most 255 characters (unit-name.c).
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,247}\.(?:service|scope)\Z")
_UNIT_SUFFIXES = (".slice", ".service", ".scope", ".socket", ".mount", ".swap", ".target", ".device")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")

KUBEPODS = "kubepods"

# Journal field suffixes (REMEDIATOR_<suffix>), in the order records list them.
FIELD_UNIT = "UNIT"
FIELD_POD_UID = "POD_UID"
FIELD_QOS_CLASS = "QOS_CLASS"
FIELD_CONTAINER_ID = "CONTAINER_ID"
FIELD_CONTAINER_RUNTIME = "CONTAINER_RUNTIME"
FIELD_POD_NAMESPACE = "POD_NAMESPACE"
FIELD_POD_NAME = "POD_NAME"
FIELD_CONTAINER_NAME = "CONTAINER_NAME"


def decode_unit_name(name: str) -> str:
    """systemd's ``\\xNN`` escapes decoded (``serial\\x2dgetty`` -> ``serial-getty``).

    Only to printable text: an escape that would decode to a control character,
    or bytes that are not UTF-8, leaves the name as written.
    """
    if "\\x" not in name:
        return name
    try:
        raw = _ESCAPE.sub(lambda m: "%" + m.group(1), name.replace("%", "%25"))
        data = bytes(_unquote_percent(raw))
        decoded = data.decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        return name
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in decoded):
        return name
    return decoded


def _unquote_percent(text: str) -> bytearray:
    out = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%":
            out.append(int(text[index + 1 : index + 3], 16))
            index += 3
            continue
        out.extend(char.encode("utf-8"))
        index += 1
    return out


@dataclass(frozen=True)
class Identity:
    """What is known about whose a cgroup is; every field but ``cgroup`` is optional.

    ``kubernetes`` is true for any cgroup in an anchored kubepods hierarchy
    (also the kubepods and QoS-class cgroups, which are no pod's), so a policy's
    Kubernetes selection can tell "no pod" from "not Kubernetes".
    """

    cgroup: str
    unit: Optional[str] = None
    kubernetes: bool = False
    pod_uid: Optional[str] = None
    qos_class: Optional[QosClass] = None
    container_id: Optional[str] = None
    container_runtime: Optional[ContainerRuntime] = None
    pod_namespace: Optional[str] = None
    pod_name: Optional[str] = None
    container_name: Optional[str] = None

    def journal_fields(self) -> Dict[str, str]:
        """The known fields as journal field suffixes (``REMEDIATOR_<key>``), absent ones left out."""
        pairs: List[Tuple[str, Optional[str]]] = [
            (FIELD_UNIT, self.unit),
            (FIELD_POD_UID, self.pod_uid),
            (FIELD_QOS_CLASS, self.qos_class.value if self.qos_class is not None else None),
            (FIELD_CONTAINER_ID, self.container_id),
            (
                FIELD_CONTAINER_RUNTIME,
                self.container_runtime.value if self.container_runtime is not None else None,
            ),
            (FIELD_POD_NAMESPACE, self.pod_namespace),
            (FIELD_POD_NAME, self.pod_name),
            (FIELD_CONTAINER_NAME, self.container_name),
        ]
        return {key: value for key, value in pairs if value}

    @property
    def readable_name(self) -> str:
        """``namespace/pod/container`` (or ``namespace/pod``), else the unit, else the cgroup."""
        if self.pod_namespace and self.pod_name:
            parts = [self.pod_namespace, self.pod_name]
            if self.container_name:
                parts.append(self.container_name)
            return "/".join(parts)
        if self.unit:
            return self.unit
        return self.cgroup or "/"


# ---------------------------------------------------------------- the path


def _slice_chain(parts: List[str]) -> List[str]:
    """The bases (name without ``.slice``) of the leading components that form systemd's slice chain."""
    bases: List[str] = []
    for part in parts:
        if not part.endswith(".slice") or len(part) == len(".slice"):
            break
        base = part[: -len(".slice")]
        if not bases:
            if "-" in base:
                break
        else:
            parent = bases[-1]
            segment = base[len(parent) + 1 :] if base.startswith(parent + "-") else ""
            if not segment or "-" in segment:
                break
        bases.append(base)
    return bases


@dataclass(frozen=True)
class _Pod:
    kubernetes: bool = False
    qos: Optional[QosClass] = None
    uid: Optional[str] = None
    container_runtime: Optional[ContainerRuntime] = None
    container_id: Optional[str] = None


def _segments(bases: List[str]) -> List[str]:
    return [base.rsplit("-", 1)[-1] for base in bases]


def _qos_and_pod(rest: List[str], separator: str) -> Tuple[_Pod, List[str]]:
    """The class and pod from the components under the kubepods anchor; the components left after the pod."""
    qos: Optional[QosClass] = None
    if rest and rest[0] in (QosClass.BURSTABLE.value, QosClass.BESTEFFORT.value):
        qos = QosClass(rest[0])
        rest = rest[1:]
    if not rest:
        return _Pod(kubernetes=True, qos=qos), []
    uid = canonical_pod_uid(rest[0][len("pod") :], separator) if rest[0].startswith("pod") else None
    if uid is None:
        # Not a pod the kubelet made (an explicit class still holds for what is under it).
        return _Pod(kubernetes=True, qos=qos), []
    # Guaranteed pods sit directly under kubepods, without a class of their own.
    return _Pod(kubernetes=True, qos=qos or QosClass.GUARANTEED, uid=uid), rest[1:]


def _systemd_pod(parts: List[str], bases: List[str]) -> _Pod:
    segments = _segments(bases)
    if KUBEPODS not in segments:
        return _Pod()
    index = segments.index(KUBEPODS)
    pod, below = _qos_and_pod(segments[index + 1 :], "_")
    if pod.uid is None or below or len(parts) == len(bases):
        # The pod slice itself, or not a pod, or a slice under the pod: no container.
        return pod
    match = _SCOPE_CONTAINER.match(parts[len(bases)])
    if match is None:
        return pod
    return replace(pod, container_runtime=_RUNTIME_PREFIXES[match.group(1)], container_id=match.group(2))


def _cgroupfs_anchor(parts: List[str]) -> Optional[int]:
    if parts and parts[0] == KUBEPODS:
        return 0
    if len(parts) > 1 and parts[1] == KUBEPODS and not parts[0].endswith(_UNIT_SUFFIXES):
        return 1
    return None


def _cgroupfs_pod(parts: List[str]) -> _Pod:
    anchor = _cgroupfs_anchor(parts)
    if anchor is None:
        return _Pod()
    pod, below = _qos_and_pod(parts[anchor + 1 :], "-")
    if pod.uid is None or not below:
        return pod
    match = _CGROUPFS_CONTAINER.match(below[0])
    if match is None:
        return pod
    runtime = _RUNTIME_PREFIXES[match.group(1)] if match.group(1) else None
    return replace(pod, container_runtime=runtime, container_id=match.group(2))


def parse_cgroup(cgroup: str) -> Identity:
    """The identity the path alone gives (no file is read). Never raises."""
    if not isinstance(cgroup, str):
        return Identity(cgroup="")
    parts = cgroup.strip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        return Identity(cgroup=cgroup)
    bases = _slice_chain(parts)
    unit: Optional[str] = None
    if len(parts) > len(bases) and _UNIT_NAME.match(parts[len(bases)]):
        unit = decode_unit_name(parts[len(bases)])
    pod = _systemd_pod(parts, bases) if bases else _cgroupfs_pod(parts)
    return Identity(
        cgroup=cgroup,
        unit=unit,
        kubernetes=pod.kubernetes,
        pod_uid=pod.uid,
        qos_class=pod.qos,
        container_id=pod.container_id,
        container_runtime=pod.container_runtime,
    )


# ---------------------------------------------------------------- the kubelet's log directories


class IdentityResolver:
    """``identify(cgroup)``: the path's identity plus, for a pod, its names from the node's log directories.

    ``root`` is the node's file system root (``/``; a temporary directory in
    tests); the kubelet's directories are ``<root>/var/log/pods`` and
    ``<root>/var/log/containers`` unless ``pods_log_dir`` names the first (the
    second is then its sibling ``containers``).
    """

    def __init__(
        self,
        root: Path = Path("/"),
        pods_log_dir: Optional[Path] = None,
        clock: Optional[Clock] = None,
        max_pods: int = DEFAULT_MAX_PODS,
    ) -> None:
        pods = pods_log_dir if pods_log_dir is not None else root / "var" / "log" / "pods"
        self.index = PodLogIndex(pods, clock=clock, max_pods=max_pods)

    def identify(self, cgroup: str) -> Identity:
        identity = parse_cgroup(cgroup)
        if identity.pod_uid is None:
            return identity
        names = self.index.pod(identity.pod_uid)
        if names is None:
            return identity
        container: Optional[str] = None
        if identity.container_id is not None:
            container = self.index.container_name(identity.pod_uid, identity.container_id)
        return replace(identity, pod_namespace=names.namespace, pod_name=names.name, container_name=container)
