"""Pod and container names from the kubelet's log directories (``/var/log/pods``, ``/var/log/containers``).

See ``remediator.identity`` for why these directories, and how a container is
named only from a link that carries its full id into the same pod's directory.
``PodLogIndex`` lists them lazily, at most once per coarse mtime step, and keeps
at most ``max_pods`` pods: a node with many pods costs bounded memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from remediator.clock import Clock, SystemClock
from remediator.k8s_names import CONTAINER_ID, canonical_pod_uid, is_dns_label, is_dns_subdomain


@dataclass(frozen=True)
class PodNames:
    namespace: str
    name: str


def parse_pod_log_dir(name: str) -> Optional[Tuple[str, PodNames]]:
    """``<namespace>_<pod>_<uid>`` -> (uid, names), or None when any part does not validate."""
    parts = name.split("_")
    if len(parts) != 3:
        return None
    namespace, pod, uid = parts
    if not (is_dns_label(namespace) and is_dns_subdomain(pod)):
        return None
    canonical = canonical_pod_uid(uid, "-")
    if canonical is None:
        return None
    return canonical, PodNames(namespace, pod)


def parse_container_link(name: str, target: str) -> Optional[Tuple[str, str, str]]:
    """A /var/log/containers link -> (container id, pod uid, container name), or None.

    ``name`` is ``<pod>_<namespace>_<container>-<64 hex>.log``; ``target`` must
    end in ``<namespace>_<pod>_<uid>/<container>/<file>.log`` with the same names.
    """
    if not name.endswith(".log"):
        return None
    head, dash, container_id = name[: -len(".log")].rpartition("-")
    if not dash or CONTAINER_ID.match(container_id) is None:
        return None
    fields = head.split("_")
    if len(fields) != 3:
        return None
    pod, namespace, container = fields
    components = target.split("/")
    if len(components) < 3 or not components[-1].endswith(".log"):
        return None
    parsed = parse_pod_log_dir(components[-3])
    if parsed is None:
        return None
    uid, names = parsed
    if (names.namespace, names.name, components[-2]) != (namespace, pod, container):
        return None
    if not is_dns_label(container):
        return None
    return container_id, uid, container


@dataclass
class _Listing:
    """One directory's entries as last read, and when: re-read on a miss only if it changed."""

    entries: Dict[str, Tuple[str, ...]]
    version: Optional[Tuple[int, int]] = None  # (st_ino, st_mtime_ns) when read
    read_at: float = float("-inf")  # wall seconds
    mtime: float = float("-inf")


_Reader = Callable[[Path, str], Optional[Dict[str, Tuple[str, ...]]]]

# A directory is re-read on a miss when its mtime changed since the last read, or when that read
# was within this long of its mtime: on a file system with coarse timestamps an entry added in the
# same tick after the read leaves the mtime as it was.
_COARSE_MTIME_SEC = 2.0
DEFAULT_MAX_PODS = 4096


class PodLogIndex:
    """Pod and container names from the kubelet's log directories, cached.

    Keyed by pod UID (and container id). A lookup that misses re-reads the
    directory only when it changed (its mtime), so a cgroup whose pod has no
    log directory costs one ``stat`` per lookup, not a listing. Each cache
    holds at most ``max_pods`` pods (``4 x max_pods`` containers); kubelet's
    own ``--max-pods`` defaults to 110.
    """

    def __init__(
        self,
        pods_log_dir: Path,
        containers_log_dir: Optional[Path] = None,
        clock: Optional[Clock] = None,
        max_pods: int = DEFAULT_MAX_PODS,
    ) -> None:
        self._pods_dir = pods_log_dir
        self._containers_dir = (
            containers_log_dir if containers_log_dir is not None else pods_log_dir.parent / "containers"
        )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_pods = max_pods
        self._pods = _Listing({})
        self._containers = _Listing({})
        self.reads = 0  # directory listings done (for tests and the cost benchmark)

    def pod(self, uid: str) -> Optional[PodNames]:
        entry = self._lookup(self._pods, uid, self._read_pods)
        return PodNames(entry[0], entry[1]) if entry is not None else None

    def container_name(self, uid: str, container_id: str) -> Optional[str]:
        entry = self._lookup(self._containers, container_id, self._read_containers)
        if entry is None or entry[0] != uid:
            return None
        return entry[1]

    def _lookup(self, listing: _Listing, key: str, read: _Reader) -> Optional[Tuple[str, ...]]:
        found = listing.entries.get(key)
        if found is not None:
            return found
        directory = self._pods_dir if listing is self._pods else self._containers_dir
        try:
            st = os.stat(directory)
        except (OSError, ValueError):
            return None
        version = (st.st_ino, st.st_mtime_ns)
        unchanged = version == listing.version and listing.read_at - listing.mtime > _COARSE_MTIME_SEC
        if unchanged:
            return None
        read_at = self._clock.wall()
        entries = read(directory, key)
        if entries is None:
            return None
        listing.entries = entries
        listing.version = version
        listing.read_at = read_at
        listing.mtime = st.st_mtime
        self.reads += 1
        return entries.get(key)

    def _bounded(
        self, found: List[Tuple[str, Tuple[str, ...]]], wanted: str, limit: int
    ) -> Dict[str, Tuple[str, ...]]:
        found.sort()
        kept = dict(found[:limit])
        for key, value in found:
            if key == wanted:
                kept[key] = value
        return kept

    def _read_pods(self, directory: Path, wanted: str) -> Optional[Dict[str, Tuple[str, ...]]]:
        found: List[Tuple[str, Tuple[str, ...]]] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    parsed = parse_pod_log_dir(entry.name)
                    if parsed is not None and entry.is_dir(follow_symlinks=False):
                        uid, names = parsed
                        found.append((uid, (names.namespace, names.name)))
        except (OSError, ValueError):
            return None
        return self._bounded(found, wanted, self._max_pods)

    def _read_containers(self, directory: Path, wanted: str) -> Optional[Dict[str, Tuple[str, ...]]]:
        found: List[Tuple[str, Tuple[str, ...]]] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not entry.name.endswith(".log") or not entry.is_symlink():
                        continue
                    try:
                        target = os.readlink(entry.path)
                    except (OSError, ValueError):
                        continue
                    parsed = parse_container_link(entry.name, target)
                    if parsed is not None:
                        container_id, uid, container = parsed
                        found.append((container_id, (uid, container)))
        except (OSError, ValueError):
            return None
        return self._bounded(found, wanted, 4 * self._max_pods)
