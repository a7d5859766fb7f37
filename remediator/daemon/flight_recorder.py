"""The flight recorder (issue 15 item 3): the last minutes of every pressured target, written at an incident.

The seed took three days because nobody had recorded what the cgroup's memory
was made of while it died. The daemon reads exactly that on every look at a
target; this module keeps those reads, and when something goes wrong writes
them out as a ``remediator.trace/v1`` file (``source: flight-recorder``) that
``remediator replay`` reads like any trace.

What is kept, per watched cgroup (the node's looks once, for all of them):

- every look (its memory files in the trace's full form, compact JSON, and
  whether a PSI trigger event prompted it) for the last
  ``flight_recorder_minutes``, plus the newest look before them (the replay's
  baseline), **while the target had pressure** (a trigger event or an open
  pressure episode) within those minutes;
- for a target without pressure in them, only its last look.

Memory, bounded and measured on the real-kernel fixture
(tests/fixtures/traces/seed-dry-run.trace.gz): a cgroup look costs 0.7-0.8 KB
(its full form: 27 memory.stat keys, events, limits, pressure), a node look
0.2 KB. At most ``TARGET_BUFFER_BYTES`` (1 MiB, about 1300 looks: ten minutes
at the usual pace under pressure, a trigger event and a verify look every 2 s
and a follow-up look every second) per target with pressure, and
``NODE_BUFFER_BYTES`` (256 KiB) for the node's looks; the oldest go first. A
target without pressure costs its last look, under 1 KB.

When (``noticed`` sees every record, ``observed`` every look):

- a ladder is exhausted (the core's ``ladder_exhausted`` decline);
- a memory.high is backed off (BACKED_OFF);
- ``oom_kill`` of memory.events rises between two looks at a watched cgroup.

The window is written to ``<state dir>/incidents/<UTC time>-<cgroup slug>.trace.gz``
with an INCIDENT_RECORDED record naming it, in dry-run too (the audit trail an
operator wants before enforcing). One file per cgroup and reason per window:
a ladder exhausted again a minute later is in the next window anyway. Disk use
is capped by ``incidents_max_files`` and ``incidents_max_bytes``: after each
write the oldest files go first (the one just written stays).

The directory is created 0700 and must be a real directory owned by the
daemon's user and writable by nobody else (as the state file's); files are
created with O_EXCL|O_NOFOLLOW relative to it, 0600.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import re
import stat
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Deque, Dict, List, Optional, Tuple, Union

from remediator import __version__
from remediator.clock import Clock
from remediator.kernel.capabilities import Capabilities
from remediator.kernel.roots import KernelRoots
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import Knob, Record, RecordType
from remediator.settings import Settings
from remediator.sizes import format_bytes
from remediator.text import plural
from remediator.trace.format import (
    EndReason,
    JsonObject,
    TraceHeader,
    TraceSource,
    cgroup_fields,
    node_fields,
)
from remediator.trace.provenance import node_name, policy_digests, trace_capabilities
from remediator.trace.writer import GZIP_SUFFIX, TraceWriter

INCIDENTS_DIRECTORY_NAME = "incidents"
INCIDENT_SUFFIX = ".trace" + GZIP_SUFFIX
TARGET_BUFFER_BYTES = 1 << 20
NODE_BUFFER_BYTES = 256 << 10
MAX_SLUG_CHARS = 120
# Why a window was written (REMEDIATOR_INCIDENT_REASON).
LADDER_EXHAUSTED = "ladder_exhausted"
BACKED_OFF = "backed_off"
OOM_KILL = "oom_kill"
_REASON_WORDS = {
    LADDER_EXHAUSTED: "the ladder was exhausted",
    BACKED_OFF: "a memory.high was backed off",
    OOM_KILL: "the OOM killer killed in it",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

Target = Optional[str]  # a cgroup; None for the node


def incidents_directory(data_dir: Path) -> Path:
    """Under ``Settings.persistent_dir``: /var/lib/remediator in the package, so a reboot keeps them."""
    return data_dir / INCIDENTS_DIRECTORY_NAME


def slug(cgroup: Target) -> str:
    """A file-name-safe form of the cgroup (``system.slice-nginx.service``); ``node`` for the node."""
    if cgroup is None:
        return "node"
    text = _UNSAFE.sub("_", cgroup.replace("/", "-")).strip("-_.") or "root"
    return text[:MAX_SLUG_CHARS]


def _encode(fields: JsonObject) -> bytes:
    return json.dumps(fields, separators=(",", ":"), allow_nan=False).encode("ascii")


@dataclass(frozen=True)
class _Look:
    at: float  # monotonic seconds
    fired: bool
    policy: str
    cgroup: Optional[bytes]  # the cgroup's full form (None: a look at the node)


@dataclass
class _Buffer:
    looks: Deque[_Look] = field(default_factory=deque)
    size: int = 0
    last_pressure: Optional[float] = None
    oom_kills: Optional[int] = None
    written: Dict[str, float] = field(default_factory=dict)  # reason -> when its window was written

    def push(self, look: _Look) -> None:
        self.looks.append(look)
        self.size += len(look.cgroup or b"")

    def pop_oldest(self) -> None:
        look = self.looks.popleft()
        self.size -= len(look.cgroup or b"")


@dataclass
class FlightRecorder:
    """See the module docstring. ``observed``/``noticed`` return the incident record to emit, if any."""

    directory: Path
    clock: Clock
    roots: KernelRoots
    capabilities: Capabilities
    policies_dir: Path
    window_sec: float
    max_files: int
    max_bytes: int
    target_buffer_bytes: int = TARGET_BUFFER_BYTES
    node_buffer_bytes: int = NODE_BUFFER_BYTES
    _buffers: Dict[Target, _Buffer] = field(default_factory=dict)
    _node_looks: Deque[Tuple[float, bytes]] = field(default_factory=deque)
    _node_size: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock, capabilities: Capabilities) -> FlightRecorder:
        return cls(
            directory=incidents_directory(settings.persistent_dir),
            clock=clock,
            roots=KernelRoots(settings.cgroup_root, settings.proc_root),
            capabilities=capabilities,
            policies_dir=settings.policies_dir,
            window_sec=settings.flight_recorder_minutes * 60,
            max_files=settings.incidents_max_files,
            max_bytes=settings.incidents_max_bytes,
        )

    @property
    def enabled(self) -> bool:
        return self.window_sec > 0

    def configure(self, settings: Settings) -> None:
        """A reload: the window and the caps apply from now (0 minutes switches the recorder off)."""
        self.window_sec = settings.flight_recorder_minutes * 60
        self.max_files = settings.incidents_max_files
        self.max_bytes = settings.incidents_max_bytes
        self.policies_dir = settings.policies_dir
        if not self.enabled:
            self._buffers.clear()
            self._node_looks.clear()
            self._node_size = 0

    # ---- keeping ----------------------------------------------------------------------------
    def observed(
        self,
        policy: str,
        cgroup: Target,
        snapshot: Union[CgroupSnapshot, NodeSnapshot],
        node: Optional[NodeSnapshot],
        fired: bool,
        pressured: bool,
    ) -> Optional[Record]:
        """One look at a target; the incident record when its oom_kill count rose since the last."""
        if not self.enabled:
            return None
        now = self.clock.monotonic()
        if node is not None:
            self._keep_node(now, node)
        buffer = self._buffers.setdefault(cgroup, _Buffer())
        if pressured or fired:
            buffer.last_pressure = now
        full = cgroup_fields(snapshot) if isinstance(snapshot, CgroupSnapshot) else None
        buffer.push(_Look(now, fired, policy, None if full is None else _encode(full)))
        self._prune(buffer, now)
        if not isinstance(snapshot, CgroupSnapshot):
            return None
        before, buffer.oom_kills = buffer.oom_kills, snapshot.events.oom_kill
        if before is not None and snapshot.events.oom_kill > before:
            return self.incident(policy, cgroup, OOM_KILL)
        return None

    def _keep_node(self, now: float, node: NodeSnapshot) -> None:
        if self._node_looks and self._node_looks[-1][0] == now:
            return  # one node read per wake-up
        data = _encode(node_fields(node))
        self._node_looks.append((now, data))
        self._node_size += len(data)
        start = now - self.window_sec
        while len(self._node_looks) > 1 and (
            self._node_looks[1][0] <= start or self._node_size > self.node_buffer_bytes
        ):
            self._node_size -= len(self._node_looks.popleft()[1])

    def _prune(self, buffer: _Buffer, now: float) -> None:
        start = now - self.window_sec
        pressured = buffer.last_pressure is not None and buffer.last_pressure >= start
        while len(buffer.looks) > 1 and (
            not pressured or buffer.looks[1].at <= start or buffer.size > self.target_buffer_bytes
        ):
            buffer.pop_oldest()

    def forget(self, cgroup: Target) -> None:
        """The target is no longer watched (by any policy: the caller knows)."""
        self._buffers.pop(cgroup, None)

    def memory_bytes(self) -> int:
        """What the kept looks take (their encoded bytes): the documented bound's measure."""
        return self._node_size + sum(b.size for b in self._buffers.values())

    # ---- noticing ---------------------------------------------------------------------------
    def noticed(self, record: Record) -> Optional[Record]:
        """Every record the service emits: the incident record when this one is an incident."""
        if not self.enabled:
            return None
        if record.type is RecordType.BACKED_OFF:
            return self.incident(record.policy, record.cgroup, BACKED_OFF)
        if record.type is RecordType.ACTION_DECLINED and record.extra.get("REASON_KEY") == LADDER_EXHAUSTED:
            return self.incident(record.policy, record.cgroup, LADDER_EXHAUSTED)
        return None

    # ---- writing ----------------------------------------------------------------------------
    def incident(self, policy: str, cgroup: Target, reason: str) -> Optional[Record]:
        """Write the target's window now; None when it has no looks or this reason's window was written."""
        buffer = self._buffers.get(cgroup)
        now = self.clock.monotonic()
        if buffer is None or not buffer.looks:
            return None
        last = buffer.written.get(reason)
        if last is not None and now - last < self.window_sec:
            return None
        buffer.written[reason] = now
        looks = list(buffer.looks)
        what = _REASON_WORDS[reason]
        try:
            path, size = self._write(cgroup, looks, reason, now)
            removed = self._cap()
        except OSError as exc:
            return Record(
                RecordType.INCIDENT_RECORDED,
                f"flight recorder: could not write the window of {_where(cgroup)} ({what}) under "
                f"{self.directory}: {exc.strerror or exc}",
                policy=policy,
                cgroup=cgroup,
                result="failed",
                errno=errno.errorcode.get(exc.errno or 0, ""),
                extra={"INCIDENT_REASON": reason},
            )
        span = now - looks[0].at
        extra = {"INCIDENT_FILE": str(path), "INCIDENT_REASON": reason, "INCIDENT_BYTES": str(size)}
        if removed:
            extra["INCIDENTS_REMOVED"] = str(removed)
        return Record(
            RecordType.INCIDENT_RECORDED,
            f"flight recorder: {what} on {_where(cgroup)}; its last {span:.0f} s "
            f"({plural(len(looks), 'look')}) are in {path} ({format_bytes(size)}); "
            f"replay it with: remediator replay {path}",
            policy=policy,
            cgroup=cgroup,
            action=Knob.MEMORY_HIGH if reason == BACKED_OFF else None,
            result="written",
            extra=extra,
        )

    def _directory_fd(self) -> int:
        """The incidents directory, opened without following a symlink and checked to be ours alone."""
        # The state directory too: in dry-run nothing else has made it.
        self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.directory, 0o700)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            os.close(fd)
            raise OSError(errno.EPERM, f"{self.directory} is not owned by us alone (mode {info.st_mode:o})")
        return fd

    def _write(self, cgroup: Target, looks: List[_Look], reason: str, now: float) -> Tuple[Path, int]:
        start = looks[0].at
        wall = self.clock.wall()
        header = TraceHeader(
            node=node_name(self.roots),
            kernel_release=self.capabilities.kernel_release,
            capabilities=trace_capabilities(self.capabilities),
            policies=policy_digests(self.policies_dir),
            start_wall=wall - (now - start),
            start_monotonic=start,
            source=TraceSource.FLIGHT_RECORDER,
            interval_sec=None,
            remediator_version=__version__,
        )
        stamp = datetime.fromtimestamp(wall, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dir_fd = self._directory_fd()
        try:
            fd, name = self._create(dir_fd, f"{stamp}-{slug(cgroup)}")
            with os.fdopen(fd, "wb") as raw:
                stream = gzip.GzipFile(filename=name[: -len(GZIP_SUFFIX)], mode="wb", fileobj=raw)
                with TraceWriter(stream, header) as writer:  # type: ignore[arg-type]
                    self._records(writer, cgroup, looks, now, reason)
                raw.flush()
                os.fsync(raw.fileno())
                size = os.fstat(raw.fileno()).st_size
        finally:
            os.close(dir_fd)
        return self.directory / name, size

    @staticmethod
    def _create(dir_fd: int, stem: str) -> Tuple[int, str]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for n in range(1, 100):
            name = stem + ("" if n == 1 else f"-{n}") + INCIDENT_SUFFIX
            try:
                return os.open(name, flags, 0o600, dir_fd=dir_fd), name
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, f"too many incidents named {stem}")

    def _records(
        self, writer: TraceWriter, cgroup: Target, looks: List[_Look], now: float, reason: str
    ) -> None:
        nodes = [(at, data) for at, data in self._node_looks if at >= looks[0].at]
        events: List[Tuple[float, int, Optional[bytes], Optional[_Look]]]
        events = [(at, 0, data, None) for at, data in nodes]
        events += [(look.at, 1, None, look) for look in looks]
        for at, _order, node, look in sorted(events, key=lambda e: (e[0], e[1])):
            if node is not None:
                writer.node_full_form(at, json.loads(node))
            elif look is not None:
                if look.cgroup is not None and cgroup is not None:
                    writer.cgroup_full_form(at, cgroup, json.loads(look.cgroup))
                if look.fired:
                    # After the readings of the same moment: the replay fires it on the tree as read.
                    writer.trigger(at, cgroup, look.policy)
        writer.end(now, EndReason.WINDOW, reason)

    def _cap(self) -> int:
        """Remove the oldest incident files until both caps hold (the newest always stays)."""
        entries = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(INCIDENT_SUFFIX) and entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                entries.append((info.st_mtime, entry.name, info.st_size))
        entries.sort()
        total = sum(size for _, _, size in entries)
        removed = 0
        while len(entries) > 1 and (len(entries) > self.max_files or total > self.max_bytes):
            _, name, size = entries.pop(0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
            total -= size
            removed += 1
        return removed


def _where(cgroup: Target) -> str:
    return "the node" if cgroup is None else cgroup


__all__ = ["FlightRecorder", "incidents_directory", "slug"]
