"""``remediator record``: sample cgroups and the node into a trace (``remediator.trace/v1``).

It changes nothing in the kernel: the cgroup and proc files are only read,
and a PSI trigger (a write to a pressure file) lives only as long as its fd
and is armed only where the daemon would arm it, never on a copied tree; so the
command works on a copied tree (``--cgroup-root``, ``--proc-root``) as well as
on a live node. It writes exactly one file, which it creates (never an
existing one).

Every ``interval`` seconds (a fixed rate from the start; a sample that
overruns skips the slots it missed) it reads the node and each selected
cgroup: the named ones, or what the loaded policies select, walked again at
every sample so that a cgroup created later is recorded from the next sample
on. A recorded cgroup that is no longer there gets a ``gone`` record.
Between samples it waits on the PSI triggers the daemon would arm on what it
records, writes a ``trigger`` record for each event and reads the node and
the cgroup it fired on at once and again the policy's ``verify_sec`` later
(``remediator.commands.record_triggers``;
``--no-triggers``: samples only). SIGINT and SIGTERM end the recording (and
that wait) cleanly: an ``end`` record, then the file is closed (a gzip file
with its end marker). The file is flushed after every sample and every
event, so even a recorder killed with SIGKILL leaves a trace that
reads up to its last sample.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import signal
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Callable, List, Optional, Sequence, Set, TextIO, Tuple

from remediator import __version__
from remediator.clock import Clock
from remediator.commands.record_triggers import (
    KERNEL_TRIGGERS,
    TriggerKernel,
    TriggerRecorder,
    Waiter,
)
from remediator.commands.status import select_cgroups
from remediator.errors import CgroupGone, KernelError, KernelParseError
from remediator.kernel.capabilities import Capabilities, probe
from remediator.kernel.roots import InvalidCgroupName, KernelRoots, normalize_cgroup
from remediator.kernel.snapshot import read_cgroup_snapshot, read_node_snapshot
from remediator.policy.compiled import Policy
from remediator.sizes import format_bytes
from remediator.trace.format import (
    EndReason,
    TraceHeader,
    TraceSource,
)
from remediator.trace.provenance import node_name, policy_digests, trace_capabilities
from remediator.trace.writer import TraceWriter

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_INTERVAL_SEC = 1.0
# The kernel refreshes the PSI averages every 2 s; below 0.1 s a trace mostly repeats
# itself and the recorder takes CPU from the incident it is recording.
MIN_INTERVAL_SEC = 0.1
# Two samples whose slots are closer than this are the same slot (float rounding of k * interval).
_SLOT_EPSILON = 1e-9
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalWaiter:
    """Sleeps in ``select`` on a pipe the signal machinery writes to (``signal.set_wakeup_fd``),
    so SIGINT/SIGTERM end the wait at once instead of after the interval (PEP 475 resumes a plain
    ``sleep`` after the handler). Main thread only, like any signal handling."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    @property
    def fd(self) -> int:
        """The end a poll() waits on: readable once a signal arrived."""
        return self._read

    def wait(self, seconds: float) -> None:
        ready, _, _ = select.select([self._read], [], [], max(0.0, seconds))
        if ready:
            try:
                while os.read(self._read, 512):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)


@dataclass(frozen=True)
class RecordRequest:
    roots: KernelRoots
    policies: Sequence[Policy]
    policies_dir: Path
    cgroups: Sequence[str]  # named on the command line; empty: what the policies select
    all_cgroups: bool
    output: Optional[Path]  # None: remediator-<UTC time>.trace.gz in the working directory
    interval_sec: float = DEFAULT_INTERVAL_SEC
    duration_sec: Optional[float] = None  # None: until SIGINT/SIGTERM
    triggers: bool = True  # arm the policies' PSI triggers and record their events (--no-triggers: False)


@dataclass
class _Stop:
    signal: Optional[int] = None


@dataclass
class _Progress:
    samples: int = 0
    cgroups: Set[str] = field(default_factory=set)
    gone: int = 0
    # Problems already said, so that a cgroup unreadable for an hour is said once.
    said: Set[Tuple[str, str]] = field(default_factory=set)


def default_output(wall: float) -> Path:
    stamp = datetime.fromtimestamp(wall, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"remediator-{stamp}.trace.gz")


class _Recorder:
    def __init__(
        self,
        request: RecordRequest,
        writer: TraceWriter,
        clock: Clock,
        err: TextIO,
        progress: _Progress,
        triggers: Optional[TriggerRecorder],
    ) -> None:
        self.request = request
        self.writer = writer
        self.clock = clock
        self.err = err
        self.progress = progress
        self.triggers = triggers

    def say_once(self, subject: str, problem: str) -> None:
        if (subject, problem) not in self.progress.said:
            self.progress.said.add((subject, problem))
            self.err.write(f"remediator: record: {problem}\n")

    def selection(self) -> Optional[List[str]]:
        """The cgroups to read now; None when the tree could not be walked (then nothing is gone)."""
        try:
            return _select(self.request)
        except KernelError as exc:
            self.say_once("", f"cannot walk the cgroup tree: {exc}")
            return None

    def _read_node(self) -> None:
        # Every record is stamped with the time its read began, as the daemon stamps its observations.
        now = self.clock.monotonic()
        try:
            node = read_node_snapshot(self.request.roots)
        except (KernelError, KernelParseError) as exc:
            self.say_once("/", f"node readings unavailable: {exc}")
        else:
            self.writer.node(now, node)

    def _read_cgroup(self, cgroup: str) -> bool:
        """Read and write one cgroup; False when it is gone."""
        now = self.clock.monotonic()
        try:
            snapshot = read_cgroup_snapshot(self.request.roots, cgroup)
        except CgroupGone:
            return False
        except (KernelError, KernelParseError) as exc:
            # Still there (a file it cannot read is not a removal): no gone record.
            self.say_once(cgroup, f"{cgroup}: {exc}")
            return True
        self.writer.cgroup(now, snapshot)
        self.progress.cgroups.add(cgroup)
        return True

    def read_now(self, cgroups: Set[Optional[str]]) -> None:
        """Read the node and these recorded cgroups (None: the node only) now: at a trigger event
        and at the daemon's look verify_sec after it (record_triggers.TriggerRecorder.wait)."""
        self._read_node()
        for cgroup in sorted(c for c in cgroups if c is not None):
            if cgroup in self.writer.cgroups:
                self._read_cgroup(cgroup)
        self.writer.flush()

    def sample(self) -> None:
        self._read_node()
        selected = self.selection()
        present: Set[str] = set()
        for cgroup in selected or ():
            if self._read_cgroup(cgroup):
                present.add(cgroup)
        if selected is not None:
            now = self.clock.monotonic()
            for cgroup in self.writer.cgroups:
                if cgroup not in present and self.writer.gone(now, cgroup):
                    self.progress.gone += 1
        self.writer.flush()
        self.progress.samples += 1
        if self.triggers is not None:
            # After the reads: a cgroup new in this sample is armed now (the daemon at its rescan).
            self.triggers.sync(selected)


def _select(request: RecordRequest) -> List[str]:
    return select_cgroups(request.roots, request.cgroups, request.all_cgroups, request.policies)


def _install_stop_handlers(stop: _Stop) -> Callable[[], None]:
    def handler(signum: int, _frame: Optional[FrameType]) -> None:
        stop.signal = signum

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _validate(request: RecordRequest) -> Optional[str]:
    if not math.isfinite(request.interval_sec) or request.interval_sec < MIN_INTERVAL_SEC:
        return f"--interval must be at least {MIN_INTERVAL_SEC} s (got {request.interval_sec})"
    if request.duration_sec is not None and not (
        math.isfinite(request.duration_sec) and request.duration_sec > 0
    ):
        return f"--duration must be a positive number of seconds (got {request.duration_sec})"
    try:
        for cgroup in request.cgroups:
            normalize_cgroup(cgroup)
    except InvalidCgroupName as exc:
        return str(exc)
    return None


def run_record(
    request: RecordRequest,
    clock: Clock,
    out: TextIO,
    err: TextIO,
    waiter: Optional[Waiter] = None,
    trigger_kernel: TriggerKernel = KERNEL_TRIGGERS,
) -> int:
    """Record until the duration ends or SIGINT/SIGTERM; 0 then, 1 when the file cannot be
    created or written, 2 for bad arguments. ``waiter`` replaces the real sleep and
    ``trigger_kernel`` the kernel's triggers (tests)."""
    problem = _validate(request)
    if problem is not None:
        err.write(f"remediator: record: {problem}\n")
        return EXIT_USAGE
    caps = probe(request.roots)
    if not caps.memory_controller_v2:
        err.write(
            "remediator: record: no cgroup v2 memory controller under "
            f"{request.roots.cgroup_root}; recording the node only. {caps.explanation()}\n"
        )
    output = request.output or default_output(clock.wall())
    stop = _Stop()
    restore = _install_stop_handlers(stop)
    own_waiter: Optional[SignalWaiter] = None
    triggers: Optional[TriggerRecorder] = None
    try:
        if waiter is None:
            own_waiter = waiter = SignalWaiter()
        if request.triggers:
            wakeup = own_waiter.fd if own_waiter is not None else None
            triggers = TriggerRecorder(
                request.roots, request.policies, clock, caps, err, waiter, wakeup, trigger_kernel
            )
            # Armed before the header, which says what is armed; the first sample is the baseline.
            with contextlib.suppress(KernelError):  # said at the first sample
                triggers.sync(_select(request))
        return _start(request, caps, clock, stop, triggers or waiter, triggers, output, out, err)
    finally:
        if triggers is not None:
            triggers.close()
        if own_waiter is not None:
            own_waiter.close()
        restore()


def _start(
    request: RecordRequest,
    caps: Capabilities,
    clock: Clock,
    stop: _Stop,
    waiter: Waiter,
    triggers: Optional[TriggerRecorder],
    output: Path,
    out: TextIO,
    err: TextIO,
) -> int:
    start = clock.monotonic()
    header = TraceHeader(
        node=node_name(request.roots),
        kernel_release=caps.kernel_release,
        capabilities=trace_capabilities(caps),
        policies=policy_digests(request.policies_dir),
        start_wall=clock.wall(),
        start_monotonic=start,
        source=TraceSource.RECORD,
        interval_sec=request.interval_sec,
        remediator_version=__version__,
        triggers=None if triggers is None else triggers.header_field(),
    )
    try:
        writer = TraceWriter.create(output, header)
    except OSError as exc:
        reason = "exists (a trace is never overwritten)" if exc.errno == errno.EEXIST else exc.strerror
        err.write(f"remediator: record: cannot create {output}: {reason or exc}\n")
        return EXIT_FAILED
    if triggers is not None:
        triggers.attach(writer)
    return _record(request, writer, clock, stop, waiter, triggers, output, start, out, err)


def _record(
    request: RecordRequest,
    writer: TraceWriter,
    clock: Clock,
    stop: _Stop,
    waiter: Waiter,
    triggers: Optional[TriggerRecorder],
    output: Path,
    start: float,
    out: TextIO,
    err: TextIO,
) -> int:
    if request.cgroups:
        what = ", ".join(request.cgroups)
    else:
        what = "every cgroup" if request.all_cgroups else "what the policies select"
    duration = f"for {request.duration_sec:g} s" if request.duration_sec is not None else "until interrupted"
    every = f"every {request.interval_sec:g} s"
    err.write(f"remediator: recording the node and {what} {every} {duration} into {output}\n")
    if triggers is not None:
        if not triggers.not_armed:
            err.write(f"remediator: record: {_count(triggers.armed, 'PSI trigger')} of the policies armed\n")
        triggers.say_pending()
    progress = _Progress()
    recorder = _Recorder(request, writer, clock, err, progress, triggers)
    if triggers is not None:
        triggers.on_read = recorder.read_now
    end_reason = EndReason.DURATION
    try:
        slot = 0
        while True:
            due = start + slot * request.interval_sec
            while stop.signal is None and clock.monotonic() < due:
                waiter.wait(due - clock.monotonic())
            if stop.signal is not None:
                end_reason = EndReason.SIGNAL
                break
            recorder.sample()
            # The next slot still ahead: an overrunning sample skips the slots it missed.
            elapsed = clock.monotonic() - start
            slot = max(slot + 1, math.floor(elapsed / request.interval_sec + _SLOT_EPSILON) + 1)
            if request.duration_sec is not None and (
                slot * request.interval_sec > request.duration_sec + _SLOT_EPSILON
            ):
                break
        detail = signal.Signals(stop.signal).name if stop.signal is not None else ""
        writer.end(clock.monotonic(), end_reason, detail)
        writer.close()
    except OSError as exc:
        err.write(f"remediator: record: cannot write {output}: {exc.strerror or exc}\n")
        with contextlib.suppress(OSError):
            writer.close()  # the disk that refused the records may refuse the gzip trailer too
        return EXIT_FAILED
    why = f"stopped by {detail}" if end_reason is EndReason.SIGNAL else "duration reached"
    size = output.stat().st_size
    samples = _count(progress.samples, "sample")
    cgroups = _count(len(progress.cgroups), "cgroup")
    armed = triggers is not None and not triggers.not_armed
    events = f", {_count(triggers.events, 'trigger event')}" if triggers is not None and armed else ""
    out.write(
        f"{output}: {samples} of the node and {cgroups} ({progress.gone} gone){events}, "
        f"{format_bytes(size)}; {why}\n"
    )
    return EXIT_OK
