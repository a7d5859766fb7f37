"""The kernel files the executor reads and writes, behind one interface: the real ones, or dry-run's overlay.

``KernelFiles`` is the executor's only way to the knobs' files: it answers whether a file is there,
reads it and writes it, through the confined writer (``remediator.daemon.confined_io``: the
allow-list, the walk without symlinks). ``DryRunFiles`` is the same interface with the writes
swallowed: nothing is opened for writing, and a read answers what the kernel would hold after the
writes it swallowed, for as long as the kernel's own value is still the one the write fell on (once
another writer changes the file, the kernel's value is the answer again, as it would be).

The snapshot readers see the same files: the service passes every snapshot it reads through
``seen`` (the real files: the snapshot as read; the overlay: with the field of each file it swallowed
a write to as its ``read`` answers; each knob names the field that shows its file,
``OwnedKnob.snapshot_field``, and the value is parsed here, as the snapshot readers parse it, because
knobs import no kernel module), so the decision core decides on what the kernel would hold and
knows nothing of dry-run.

Which of the two the executor is handed is chosen once, where it is built (``remediator.daemon.run``
for the daemon, ``remediator.replay.engine`` for a replay, always dry-run): the executor and every
knob write through what they are given and do not ask which one it is. ``swallows_writes`` is there
for the words of the outcome only (a record's dry-run flag, the core's "would").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, TypeVar

from remediator.daemon.confined_io import CgroupFile, ConfinedIO, KernelFile, ProcFile
from remediator.errors import RemediatorError
from remediator.kernel.memory_limits import parse_limit
from remediator.kernel.roots import KernelRoots
from remediator.kernel.sysctl_vm import parse_sysctl_int
from remediator.knobs import plugins
from remediator.knobs.base import OwnedKnob
from remediator.readings import CgroupSnapshot, NodeSnapshot

# A snapshot the readers took: a cgroup's or the node's.
SnapshotT = TypeVar("SnapshotT", CgroupSnapshot, NodeSnapshot)


class KernelFiles:
    """The knobs' kernel files as they are: reads and writes reach the kernel (through ``io``)."""

    swallows_writes = False

    def __init__(self, io: ConfinedIO) -> None:
        self._io = io

    @classmethod
    def under(cls, roots: KernelRoots) -> KernelFiles:
        return cls(ConfinedIO(roots))

    @property
    def roots(self) -> KernelRoots:
        return self._io.roots

    def exists(self, target: KernelFile) -> bool:
        return self._io.exists(target)

    def read(self, target: KernelFile) -> str:
        return self._io.read(target)

    def write(self, target: KernelFile, data: bytes) -> None:
        self._io.write(target, data)

    def seen(self, snapshot: SnapshotT) -> SnapshotT:
        """A snapshot the readers took, as these files answer: as it is (nothing is swallowed)."""
        return snapshot

    def cgroup_exists(self, cgroup: str) -> bool:
        return self._io.cgroup_exists(cgroup)

    def cgroup_id(self, cgroup: str) -> int:
        return self._io.cgroup_id(cgroup)


# Past this many remembered writes, those of cgroups that are gone are forgotten at the next write.
PRUNE_ABOVE = 1024


@dataclass(frozen=True)
class _Swallowed:
    beneath: str  # the kernel's own value when the write was swallowed
    written: str
    cgroup_id: Optional[int]  # the cgroup's id then (None: a node-wide file)


class DryRunFiles(KernelFiles):
    """Dry-run's overlay: never writes; reads answer what the kernel would hold after the swallowed writes.

    A swallowed write is answered while the kernel's own value is still the one it fell on, in the same
    cgroup (not one created again under its name); then the kernel's value is the answer again, as it
    would be after another writer's write. A write-only file (memory.reclaim) has nothing to answer,
    and a write that puts the kernel's own value back leaves nothing to remember.
    """

    swallows_writes = True

    def __init__(self, io: ConfinedIO) -> None:
        super().__init__(io)
        self._swallowed: Dict[KernelFile, _Swallowed] = {}

    def read(self, target: KernelFile) -> str:
        try:
            kernel = self._io.read(target)
            swallowed = self._swallowed.get(target)
            if swallowed is None:
                return kernel
            if kernel != swallowed.beneath or self._cgroup_id_of(target) != swallowed.cgroup_id:
                del self._swallowed[target]  # another writer's value, or another cgroup
                return kernel
        except RemediatorError:
            self._swallowed.pop(target, None)
            raise
        return swallowed.written

    def write(self, target: KernelFile, data: bytes) -> None:
        # Refused as the real write would be (allow-list, confined walk, the file there), opening nothing.
        self._io.check_writable(target)
        written = data.decode("ascii")
        try:
            beneath = self._io.read(target)
            cgroup_id = self._cgroup_id_of(target)
        except RemediatorError:
            self._swallowed.pop(target, None)  # a write-only file: nothing the kernel would answer
            return
        if written.strip() == beneath.strip():
            self._swallowed.pop(target, None)  # the kernel's own value, put back
            return
        if len(self._swallowed) > PRUNE_ABOVE:
            self._forget_gone_cgroups()
        self._swallowed[target] = _Swallowed(beneath, written, cgroup_id)

    def seen(self, snapshot: SnapshotT) -> SnapshotT:
        """The snapshot with each file this overlay swallowed a write to as ``read`` answers it."""
        if not self._swallowed:
            return snapshot
        cgroup = snapshot.cgroup if isinstance(snapshot, CgroupSnapshot) else None
        for plugin in plugins():
            owned = plugin.owned
            if owned is None or owned.snapshot_field is None or owned.per_cgroup != (cgroup is not None):
                continue
            file = owned.target(cgroup if cgroup is not None else plugin.knob)
            target = CgroupFile(cgroup, file.file) if cgroup is not None else ProcFile(file.file)
            if target in self._swallowed:
                snapshot = self._overlaid(snapshot, owned, target)
        return snapshot

    def _overlaid(self, snapshot: SnapshotT, owned: OwnedKnob, target: KernelFile) -> SnapshotT:
        field = owned.snapshot_field
        assert field is not None
        if getattr(snapshot, field) is None and not owned.limit:
            return snapshot  # not read (a node snapshot without it): nothing to show instead
        try:
            text = self.read(target)
        except RemediatorError:
            return snapshot  # gone or unreadable now: the snapshot's own reading stands
        source = target.describe()
        value = parse_limit(text, source) if owned.limit else parse_sysctl_int(text, source)
        shown: Dict[str, Any] = {field: value}
        return replace(snapshot, **shown)

    @property
    def remembered(self) -> int:
        """How many swallowed writes are remembered (bounded: see ``PRUNE_ABOVE``)."""
        return len(self._swallowed)

    def _cgroup_id_of(self, target: KernelFile) -> Optional[int]:
        return self._io.cgroup_id(target.cgroup) if isinstance(target, CgroupFile) else None

    def _forget_gone_cgroups(self) -> None:
        gone = {t.cgroup for t in self._swallowed if isinstance(t, CgroupFile)}
        gone = {cgroup for cgroup in gone if not self._io.cgroup_exists(cgroup)}
        for target in [t for t in self._swallowed if isinstance(t, CgroupFile) and t.cgroup in gone]:
            del self._swallowed[target]


__all__ = ["DryRunFiles", "KernelFiles"]
