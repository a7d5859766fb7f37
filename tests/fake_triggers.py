"""A scripted PSI trigger source for tests: real fds, real poll(), real POLLPRI.

``FakeTriggers.arm`` has the signature of ``remediator.kernel.psi_trigger.arm_trigger``
but hands out one end of a connected socket pair instead of a pressure file fd.
The other end stays here and scripts the kernel:

- ``fire(cgroup)`` sends one byte of urgent (MSG_OOB) data: the watcher's end
  becomes ready with **POLLPRI**, the very mask the production code polls for.
- ``remove_cgroup(cgroup)`` makes the fd report **POLLERR | POLLHUP together
  with POLLPRI**, as the kernel does when a cgroup is removed: urgent data is
  pending, and the peer is closed with unread data in its queue (which the
  socket layer reports as ECONNRESET, i.e. POLLERR).
- ``refuse(cgroup, errno)`` / ``refuse_all(errno)`` make arming fail the way
  the real ``arm_trigger`` does (``TriggerRefused`` for EINVAL/EPERM/...).

The kernel's trigger reports an event to one poll() and then clears it; urgent
data stays pending until read. ``poll_factory`` therefore returns a thin
wrapper around a real ``select.poll()`` that reads the urgent byte of every
trigger fd it reports POLLPRI on, after the real poll() returned. With a bare
``select.poll`` a fired fake trigger stays ready (level-triggered).

AF_UNIX stream sockets carry MSG_OOB since Linux 5.15 (CONFIG_AF_UNIX_OOB); on
kernels without it, TCP over loopback is used (same POLLPRI and POLLERR).
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import select
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from remediator.errors import CgroupGone, KernelError, KernelFileMissing, kernel_error_from_oserror
from remediator.kernel.psi_trigger import REFUSAL_ERRNOS, PsiTrigger, TriggerRefused
from remediator.kernel.roots import KernelRoots

# How long fire()/remove_cgroup() wait for the readiness they caused to become
# visible. AF_UNIX delivery is synchronous; loopback TCP may lag a softirq.
_SETTLE_MS = 2000
_BROKEN = select.POLLERR | select.POLLHUP


@dataclass
class FakeTrigger:
    """One armed fake trigger: the watcher owns ``fd``; ``peer`` scripts it."""

    path: Path
    spec: PsiTrigger
    written: bytes
    fd: int
    peer: socket.socket
    family: int
    removed: bool = False

    def closed_by_owner(self) -> bool:
        """Whether the watcher closed its end (EOF on the peer)."""
        if self.peer.fileno() == -1:
            return False
        try:
            return self.peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def _unix_oob_supported() -> bool:
    a, b = socket.socketpair()
    try:
        b.send(b"!", socket.MSG_OOB)
        return True
    except OSError:
        return False
    finally:
        a.close()
        b.close()


def _tcp_pair() -> Tuple[socket.socket, socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    for s in (near, far):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return near, far


def _wait_ready(fd: int, mask: int) -> int:
    probe = select.poll()
    probe.register(fd, mask)
    ready = probe.poll(_SETTLE_MS)
    return ready[0][1] if ready else 0


@dataclass
class FakeTriggers:
    """Scripted trigger source; see the module docstring."""

    roots: KernelRoots
    # "auto" (AF_UNIX when it carries MSG_OOB, else TCP), "unix" or "tcp".
    transport: str = "auto"
    armed: List[FakeTrigger] = field(default_factory=list)
    _refusals: Dict[Path, int] = field(default_factory=dict)
    _refuse_all: Optional[int] = None
    _by_fd: Dict[int, FakeTrigger] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transport == "auto":
            self.transport = "unix" if _unix_oob_supported() else "tcp"
        if self.transport not in ("unix", "tcp"):
            raise ValueError(f"unknown transport {self.transport!r}")

    # ---- scripting ----------------------------------------------------------
    def path_of(self, cgroup: Optional[str]) -> Path:
        if cgroup is None:
            return self.roots.proc_file("pressure/memory")
        return self.roots.cgroup_file(cgroup, "memory.pressure")

    def refuse(self, cgroup: Optional[str], errno: Optional[int]) -> None:
        """Make arming on this cgroup's (None: the node's) pressure file fail with ``errno``
        (None: accept it again)."""
        if errno is None:
            self._refusals.pop(self.path_of(cgroup), None)
        else:
            self._refusals[self.path_of(cgroup)] = errno

    def refuse_all(self, errno: Optional[int]) -> None:
        """Make every arming fail with ``errno`` (None: stop refusing)."""
        self._refuse_all = errno

    def live(self, cgroup: Optional[str]) -> List[FakeTrigger]:
        """Triggers on this pressure file that are neither removed nor closed by the watcher."""
        path = self.path_of(cgroup)
        return [t for t in self.armed if t.path == path and not t.removed and not t.closed_by_owner()]

    def fire(self, cgroup: Optional[str], spec: Optional[PsiTrigger] = None) -> int:
        """Fire every live trigger on the file (only those with ``spec`` if given); returns how many.

        Raises when nothing could fire: a test that fires nothing proves nothing.
        """
        targets = [t for t in self.live(cgroup) if spec is None or t.spec == spec]
        if not targets:
            raise AssertionError(f"no live trigger on {self.path_of(cgroup)} to fire")
        for trigger in targets:
            trigger.peer.send(b"!", socket.MSG_OOB)
            if not _wait_ready(trigger.fd, select.POLLPRI) & select.POLLPRI:
                raise AssertionError(f"fired trigger on {trigger.path} did not become ready")
        return len(targets)

    def remove_cgroup(self, cgroup: str) -> int:
        """Break every live trigger on the cgroup as its removal does; returns how many.

        The directory under the (fake) cgroup root is left alone: remove it too
        when the test needs later arming to see the cgroup gone.
        """
        targets = self.live(cgroup)
        for trigger in targets:
            trigger.peer.send(b"!", socket.MSG_OOB)
            # Unread data in the peer's queue turns its close into a reset: POLLERR here.
            owner_end = socket.socket(trigger.family, socket.SOCK_STREAM, fileno=trigger.fd)
            try:
                owner_end.send(b"x")
            finally:
                owner_end.detach()
            if trigger.family == socket.AF_INET:
                # An abortive close (RST) rather than FIN: reported as POLLERR.
                trigger.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            trigger.peer.close()
            trigger.removed = True
            if not _wait_ready(trigger.fd, select.POLLPRI) & _BROKEN:
                raise AssertionError(f"removed trigger on {trigger.path} did not report POLLERR/POLLHUP")
        return len(targets)

    def close(self) -> None:
        """Close every peer (the watcher closes its own ends)."""
        for trigger in self.armed:
            trigger.peer.close()

    # ---- the arm function ---------------------------------------------------
    def arm(self, path: Path, spec: PsiTrigger, cgroup_dir: Optional[Path] = None) -> int:
        """Like ``arm_trigger``: checks the file exists, then hands out a trigger fd."""
        refusal = self._refusals.get(path, self._refuse_all)
        if refusal is not None:
            raise self._error(path, cgroup_dir, spec, refusal)
        if cgroup_dir is not None and not cgroup_dir.is_dir():
            raise CgroupGone(path, os.strerror(errno_mod.ENOENT), errno_mod.ENOENT)
        if not path.is_file():
            raise KernelFileMissing(path, os.strerror(errno_mod.ENOENT), errno_mod.ENOENT)
        if self.transport == "unix":
            near, far = socket.socketpair()
            family = socket.AF_UNIX
        else:
            near, far = _tcp_pair()
            family = socket.AF_INET
        trigger = FakeTrigger(path, spec, spec.kernel_bytes(), near.detach(), far, family)
        self.armed.append(trigger)
        self._by_fd[trigger.fd] = trigger
        return trigger.fd

    @staticmethod
    def _error(path: Path, cgroup_dir: Optional[Path], spec: PsiTrigger, errno: int) -> KernelError:
        if errno in REFUSAL_ERRNOS:
            spec_text = spec.kernel_bytes().rstrip(b"\0").decode("ascii")
            return TriggerRefused(path, f"trigger {spec_text!r} refused: {os.strerror(errno)}", errno)
        return kernel_error_from_oserror(OSError(errno, os.strerror(errno)), path, cgroup_dir)

    # ---- the poll wrapper ---------------------------------------------------
    def poll_factory(self) -> ConsumingPoll:
        return ConsumingPoll(self)

    def consume_event(self, fd: int) -> None:
        """Clear a fired trigger's event, as the kernel does when poll() reports it."""
        trigger = self._by_fd.get(fd)
        # A closed trigger's fd number may since belong to something else (a pipe).
        if trigger is None or trigger.removed or trigger.closed_by_owner():
            return
        owner_end = socket.socket(trigger.family, socket.SOCK_STREAM, fileno=fd)
        try:
            with contextlib.suppress(OSError):
                owner_end.recv(1, socket.MSG_OOB | socket.MSG_DONTWAIT)
        finally:
            owner_end.detach()


class ConsumingPoll:
    """A real ``select.poll()`` whose POLLPRI on a fake trigger is reported once, like the kernel's."""

    def __init__(self, triggers: FakeTriggers) -> None:
        self._poll = select.poll()
        self._triggers = triggers
        self.timeouts: List[Optional[float]] = []

    def register(self, __fd: int, __eventmask: int) -> None:
        self._poll.register(__fd, __eventmask)

    def unregister(self, __fd: int) -> None:
        self._poll.unregister(__fd)

    def poll(self, __timeout: Optional[float]) -> List[Tuple[int, int]]:
        self.timeouts.append(__timeout)
        ready = self._poll.poll(__timeout)
        for fd, revents in ready:
            if revents & select.POLLPRI and not revents & _BROKEN:
                self._triggers.consume_event(fd)
        return ready
