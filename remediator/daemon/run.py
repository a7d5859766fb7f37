"""``remediator run``: the process around the service loop.

Builds the service from the settings (the real kernel roots, journal writer,
state store, executor, watcher, identity resolver and metrics), raises the
open-file limit, installs the signal handlers, writes the PID file
(``remediator.daemon.pid_file``), runs the loop until SIGTERM (or one pass with
``--once``) and removes the PID file if it is still ours.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
from typing import Callable, Optional, Tuple

from remediator.clock import Clock, SystemClock
from remediator.daemon.executor import Executor
from remediator.daemon.flight_recorder import FlightRecorder
from remediator.daemon.journal import JsonLinesWriter, StderrWriter, make_writer
from remediator.daemon.kernel_files import DryRunFiles, KernelFiles
from remediator.daemon.metrics_feed import MetricsFeed
from remediator.daemon.notify import Notifier
from remediator.daemon.pid_file import PidFileError, pid_file_path, remove_pid_file, write_pid_file
from remediator.daemon.service import Service, StartRefused
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Watcher
from remediator.identity import IdentityResolver
from remediator.kernel.capabilities import probe
from remediator.kernel.roots import KernelRoots
from remediator.records import PRIORITY_ERR, Record, RecordType
from remediator.settings import Settings


def _install_signal_handlers(service: Service) -> int:
    """Signals only set flags; a self-pipe wakes the poll() so they are handled at once."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def on_term(_signum: int, _frame: object) -> None:
        service.request_stop()

    def on_hup(_signum: int, _frame: object) -> None:
        service.request_reload()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    return read_fd


def build_executor(
    settings: Settings, clock: Clock, sleep: Optional[Callable[[float], None]] = None
) -> Executor:
    """The one place dry-run is decided (the daemon's and a replay's): the real kernel files and state
    store, or dry-run's overlay and read-only store. ``dry_run`` is a restart-only setting, so a reload
    keeps this executor; the executor and the knobs go through what they are handed and never ask."""
    roots = KernelRoots(settings.cgroup_root, settings.proc_root)
    if settings.dry_run:
        files, store = DryRunFiles.under(roots), StateStore.read_only(settings.state_file)
    else:
        files, store = KernelFiles.under(roots), StateStore(settings.state_file)
    return Executor(files, store, clock, retry_budget_sec=settings.write_retry_budget_sec, sleep=sleep)


def build_service(
    settings: Settings, clock: Clock, reload_settings: Optional[Callable[[], Settings]]
) -> Service:
    roots = KernelRoots(settings.cgroup_root, settings.proc_root)
    writer = make_writer(settings.log_target)
    executor = build_executor(settings, clock)
    capabilities = probe(roots)
    # Trigger strings go only into the kernel's own files: a copied tree is sampled (issue 12 item 4).
    watcher = Watcher(
        roots, clock, settings.sampling_interval_sec, use_triggers=capabilities.triggers_may_be_armed
    )
    return Service(
        settings=settings,
        clock=clock,
        writer=writer,
        notifier=Notifier(),
        executor=executor,
        watcher=watcher,
        capabilities=capabilities,
        reload_settings=reload_settings,
        identities=IdentityResolver(pods_log_dir=settings.pods_log_dir, clock=clock),
        metrics=MetricsFeed(settings, clock, kernel=capabilities.kernel_release),
        flight_recorder=FlightRecorder.from_settings(settings, clock, capabilities),
    )


def raise_open_file_limit() -> Tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the (soft, hard) now in force.

    Every armed trigger is an open fd, so a node with more watched cgroups than
    the usual soft limit of 1024 would otherwise fail with EMFILE on arming and
    on every read after it (measured: at 2000 cgroups the daemon never got ready;
    bench/cost). systemd gives services 1024 soft and 524288 hard for this very
    reason: programs that need many fds raise the soft limit themselves.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:  # already as high as it may go (RLIM_INFINITY included)
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, hard  # keep what we have; arming reports EMFILE per target
    return hard, hard


def run_service(
    settings: Settings, once: bool = False, reload_settings: Optional[Callable[[], Settings]] = None
) -> int:
    raise_open_file_limit()
    service = build_service(settings, SystemClock(), reload_settings)
    wake_fd = _install_signal_handlers(service)
    service.watcher.add_wakeup_fd(wake_fd)
    pid_file = None
    if not once:
        # Without the file, `remediator reload --pid $MAINPID` (the unit's ExecReload=) still works.
        with contextlib.suppress(PidFileError):
            pid_file = write_pid_file(pid_file_path(settings.state_file))
    try:
        try:
            service.start()
        except StartRefused as exc:
            record = Record(
                RecordType.DAEMON_STOPPING,
                f"refusing to start: {exc}",
                result="refused",
                priority=PRIORITY_ERR,
            )
            service.emit(record)
            if not isinstance(service.writer, (StderrWriter, JsonLinesWriter)):
                print(f"remediator: refusing to start: {exc}", file=sys.stderr)
            return 1
        if once:
            service.run_once(settle_sec=max(1.0, settings.sampling_interval_sec))
        else:
            while not service.stopping:
                service.step()
        # --once too: what the policies restore on exit is restored, and the stop is recorded.
        service.shutdown()
        return 0
    finally:
        if pid_file is not None:
            remove_pid_file(pid_file)


__all__ = ["build_executor", "build_service", "raise_open_file_limit", "run_service"]
