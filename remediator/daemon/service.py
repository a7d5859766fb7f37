"""The daemon's main loop: the glue between the watcher (the only poll()), the
snapshot readers, the pure decision core, the executor (the only writer), the
journal writer and sd_notify.

Per wake-up: collect events, observe the targets they concern with one fresh
snapshot each (the node snapshot is read at most once per tick), let the core
decide, execute its actions, feed the outcomes back, write every record, and
compute the next deadline. Idle, it blocks in poll() until a trigger fires or a
deadline the core asked for comes: it costs nothing when nothing happens.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Set, Tuple, Union

from remediator import __version__
from remediator.clock import Clock, SystemClock
from remediator.core.decide import (
    CoreConfig,
    CoreState,
    Decision,
    Observation,
    TargetKey,
    decide,
    forget,
    initial_state,
    note_outcome,
    on_exit,
)
from remediator.daemon.discovery import desired_targets
from remediator.daemon.executor import Executor
from remediator.daemon.journal import RecordWriter, make_writer
from remediator.daemon.notify import Notifier
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Fired, Gone, SampleDue, WatchChange, Watcher
from remediator.errors import CgroupGone, KernelError, KernelParseError
from remediator.kernel.capabilities import Capabilities, probe
from remediator.kernel.roots import KernelRoots
from remediator.kernel.snapshot import read_cgroup_snapshot, read_node_snapshot
from remediator.policy.compiled import Policy
from remediator.policy.loader import PolicySet, load_policy_dir
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import Record, RecordType
from remediator.settings import Settings, SettingsError


class PolicyLoader(Protocol):
    """``load_policy_dir``'s signature: the directory, and the development override of the trust check."""

    def __call__(self, directory: Path, *, allow_untrusted: bool = False) -> PolicySet: ...


@dataclass
class _Tick:
    """Readings shared by every observation of one wake-up."""

    node: Optional[NodeSnapshot] = None
    node_read: bool = False
    # When poll() returned for this wake-up (monotonic seconds); None outside the loop.
    woken_at: Optional[float] = None


# Extra fields on the records of an observation made in the loop (a trigger
# event or a timed look, such as the re-check after an unconfirmed event), in
# microseconds of the monotonic clock (CLOCK_MONOTONIC, comparable with other
# processes on the host): when the loop woke, when the core had decided, and
# (on each action's record) when the executor had finished the write. They
# show where reaction time goes, whichever look acted.
WOKEN_FIELD = "WOKEN_MONOTONIC_US"
DECIDED_FIELD = "DECIDED_MONOTONIC_US"
WRITTEN_FIELD = "WRITTEN_MONOTONIC_US"


def _monotonic_us(seconds: float) -> str:
    return str(int(seconds * 1_000_000))


def _with_timing(records: Sequence[Record], timing: Optional[Dict[str, str]]) -> Sequence[Record]:
    if not timing:
        return records
    return [replace(r, extra={**r.extra, **timing}) for r in records]


@dataclass
class Service:
    settings: Settings
    clock: Clock
    writer: RecordWriter
    notifier: Notifier
    executor: Executor
    watcher: Watcher
    capabilities: Capabilities
    load_policies: PolicyLoader = load_policy_dir
    reload_settings: Optional[Callable[[], Settings]] = None
    policies: Dict[str, Policy] = field(default_factory=dict)
    state: CoreState = field(default_factory=initial_state)
    wakeups: Dict[TargetKey, float] = field(default_factory=dict)
    _fallback_reported: Set[Tuple[str, str]] = field(default_factory=set)
    # Targets whose watch began (armed, sampling, or fallen back to sampling): only those get a
    # WATCH_ENDED, so a cgroup that vanished while being armed leaves no end without a start.
    _watching: Set[TargetKey] = field(default_factory=set)
    _next_rescan: float = 0.0
    _next_watchdog: Optional[float] = None
    _stop: bool = False
    _reload: bool = False

    @property
    def roots(self) -> KernelRoots:
        return KernelRoots(self.settings.cgroup_root, self.settings.proc_root)

    @property
    def dry_run(self) -> bool:
        return self.settings.dry_run

    # ---- records -------------------------------------------------------
    def emit(self, record: Record) -> None:
        if self.dry_run and not record.dry_run:
            record = replace(record, dry_run=True)
        self.writer.write(record)

    def emit_all(self, records: Sequence[Record]) -> None:
        for r in records:
            self.emit(r)

    # ---- policies ------------------------------------------------------
    def _policy_records(self, policy_set: PolicySet) -> List[Record]:
        out = [
            Record(
                RecordType.POLICY_REJECTED,
                f"policy rejected: {issue}",
                policy=Path(issue.file).stem,
                result="rejected",
            )
            for issue in policy_set.issues
        ]
        out.extend(
            Record(
                RecordType.POLICY_LOADED,
                f"policy {p.name} loaded from {p.source}" + ("" if p.enabled else " (disabled)"),
                policy=p.name,
                result="loaded",
            )
            for p in policy_set.policies
        )
        return out

    def install_policies(self, policies: Sequence[Policy]) -> None:
        self.policies = {p.name: p for p in policies if p.enabled}

    # ---- start ---------------------------------------------------------
    def start(self) -> None:
        caps = self.capabilities
        mode = "dry-run (audit)" if self.dry_run else "enforcing"
        self.emit(
            Record(
                RecordType.DAEMON_STARTED,
                f"remediator {__version__} starting in {mode} mode; " + " ".join(caps.summary_lines()),
                result="started",
                extra={"VERSION": __version__, "KERNEL": caps.kernel_release},
            )
        )
        policy_set = self.load_policies(
            self.settings.policies_dir, allow_untrusted=self.settings.insecure_allow_untrusted_files
        )
        self.emit_all(self._policy_records(policy_set))
        self.install_policies(policy_set.policies)
        self.emit_all(self.executor.recover())
        self.rescan()
        interval = self.notifier.watchdog_interval_sec()
        now = self.clock.monotonic()
        self._next_watchdog = now + interval if interval else None
        self.notifier.ready(self.status_text())

    def status_text(self) -> str:
        stats = self.watcher.stats()
        mode = "dry-run" if self.dry_run else "enforcing"
        return (
            f"{mode}: {len(self.policies)} policies, watching {stats.armed} target(s) by PSI trigger, "
            f"{stats.sampling} by sampling"
        )

    # ---- watching ------------------------------------------------------
    def _report_change(self, change: WatchChange) -> None:
        key = change.key
        if change.kind in ("armed", "sampling", "fallback"):
            self._watching.add(key)
        if change.kind == "fallback":
            reason_key = (key.policy, change.errno_name or change.reason)
            first = reason_key not in self._fallback_reported
            self._fallback_reported.add(reason_key)
            # Logged once per policy and reason: a refusing kernel refuses every target alike.
            self.emit(
                Record(
                    RecordType.FALLBACK_SAMPLING,
                    # Not always the kernel's refusal: a read-only mount (a sandbox) fails the same way.
                    f"could not arm a PSI trigger on {change.path} ({change.reason}); "
                    f"sampling pressure every {self.settings.sampling_interval_sec:g} s instead",
                    policy=key.policy,
                    cgroup=key.cgroup,
                    result="sampling",
                    errno=change.errno_name,
                    priority=None if first else 7,
                )
            )
        elif change.kind in ("armed", "sampling"):
            self.emit(
                Record(
                    RecordType.WATCH_STARTED,
                    f"watching {change.path} ({change.kind})",
                    policy=key.policy,
                    cgroup=key.cgroup,
                    result=change.kind,
                )
            )
        elif change.kind in ("removed", "gone"):
            self._forget(key, change.kind)

    def _forget(self, key: TargetKey, why: str) -> None:
        self.state = forget(self.state, key)
        self.wakeups.pop(key, None)
        if key not in self._watching:
            return
        self._watching.discard(key)
        self.emit(
            Record(
                RecordType.WATCH_ENDED,
                f"stopped watching ({why})",
                policy=key.policy,
                cgroup=key.cgroup,
                result=why,
            )
        )

    def rescan(self) -> None:
        started = self.clock.monotonic()
        interval = self.settings.rescan_interval_sec
        self._next_rescan = started + interval
        try:
            desired = desired_targets(self.roots, list(self.policies.values()))
        except KernelError as exc:
            # A partial walk would look like cgroups disappearing: keep the current targets.
            self.emit(
                Record(
                    RecordType.ACTION_FAILED,
                    f"cannot walk the cgroup tree, keeping current targets: {exc}",
                    result="failed",
                    errno=exc.errno_name,
                    priority=4,
                )
            )
            return
        changes = self.watcher.sync(desired)
        # Every new trigger is armed by now: say so for all of them before the baseline reads, which
        # for a burst of new cgroups take longer than the arming (the cost benchmark's pick-up).
        for change in changes:
            self._report_change(change)
        tick = _Tick()
        for change in changes:
            if change.kind in ("armed", "sampling", "fallback"):
                # The baseline read: a trigger event right after arming may be spurious,
                # and the core confirms every event against the total delta since this read.
                self.observe(change.key, fired=False, tick=tick)
        # The next walk starts early by this one's duration (walk, arming, baselines), so that a
        # cgroup created just after the walk passed it is watched within rescan_interval_sec: the
        # bound the settings document. Never more often than twice per interval.
        took = self.clock.monotonic() - started
        self._next_rescan = started + max(interval - took, interval / 2)

    # ---- deciding and acting -------------------------------------------
    def _node(self, tick: _Tick) -> Optional[NodeSnapshot]:
        if not tick.node_read:
            tick.node_read = True
            try:
                tick.node = read_node_snapshot(self.roots)
            except (KernelError, KernelParseError):
                tick.node = None
        return tick.node

    def observe(self, key: TargetKey, fired: bool, tick: _Tick) -> None:
        policy = self.policies.get(key.policy)
        if policy is None:
            return
        node = self._node(tick)
        try:
            if key.cgroup is None:
                if node is None:
                    return
                snapshot: Union[CgroupSnapshot, NodeSnapshot] = node
            else:
                snapshot = read_cgroup_snapshot(self.roots, key.cgroup)
        except CgroupGone:
            self.watcher.drop(key)
            self._forget(key, "gone")
            return
        except (KernelError, KernelParseError) as exc:
            self.emit(
                Record(
                    RecordType.ACTION_FAILED,
                    f"cannot read the cgroup's memory files: {exc}",
                    policy=key.policy,
                    cgroup=key.cgroup,
                    result="failed",
                    priority=4,
                )
            )
            return
        obs = Observation(
            key=key,
            snapshot=snapshot,
            node=node,
            fired=fired,
            reclaim_supported=self.capabilities.memory_reclaim,
        )
        now = self.clock.monotonic()
        decision = decide(policy, self.state, obs, now, CoreConfig(self.settings.node_actions_max_per_hour))
        timing: Optional[Dict[str, str]] = None
        if tick.woken_at is not None:
            timing = {
                WOKEN_FIELD: _monotonic_us(tick.woken_at),
                DECIDED_FIELD: _monotonic_us(self.clock.monotonic()),
            }
        self.apply(decision, key, timing)

    def apply(
        self, decision: Decision, key: Optional[TargetKey], timing: Optional[Dict[str, str]] = None
    ) -> None:
        self.state = decision.state
        self.emit_all(_with_timing(decision.records, timing))
        for action in decision.actions:
            outcome = self.executor.execute(action)
            written_at = self.clock.monotonic()
            self.state = note_outcome(self.state, action, outcome.result, written_at)
            written = None if timing is None else {**timing, WRITTEN_FIELD: _monotonic_us(written_at)}
            self.emit_all(_with_timing(outcome.records, written))
        if key is not None:
            if decision.wakeup_at is None:
                self.wakeups.pop(key, None)
            else:
                self.wakeups[key] = decision.wakeup_at

    # ---- the loop ------------------------------------------------------
    def next_deadline(self) -> float:
        candidates = [self._next_rescan]
        if self.wakeups:
            candidates.append(min(self.wakeups.values()))
        if self._next_watchdog is not None:
            candidates.append(self._next_watchdog)
        return min(candidates)

    def step(self) -> None:
        """One wake-up: wait for events or the next deadline, then handle everything due."""
        events = self.watcher.wait(self.next_deadline())
        tick = _Tick(woken_at=self.clock.monotonic())
        for event in events:
            if isinstance(event, Gone):
                self._forget(event.key, "gone")
            elif isinstance(event, Fired):
                self.observe(event.key, fired=True, tick=tick)
            elif isinstance(event, SampleDue):
                self.observe(event.key, fired=False, tick=tick)
        now = self.clock.monotonic()
        for key in [k for k, t in self.wakeups.items() if t <= now]:
            self.wakeups.pop(key, None)
            self.observe(key, fired=False, tick=tick)
        if self._reload:
            self._reload = False
            self.reload()
        if now >= self._next_rescan:
            self.rescan()
        if self._next_watchdog is not None and now >= self._next_watchdog:
            self.notifier.watchdog()
            interval = self.notifier.watchdog_interval_sec() or 0.0
            self._next_watchdog = now + interval if interval else None

    def request_stop(self) -> None:
        self._stop = True

    def request_reload(self) -> None:
        self._reload = True

    @property
    def stopping(self) -> bool:
        return self._stop

    def reload(self) -> None:
        self.notifier.reloading(int(self.clock.monotonic() * 1_000_000))
        new_settings = self.settings
        if self.reload_settings is not None:
            try:
                new_settings = self.reload_settings()
            except SettingsError as exc:
                for issue in exc.issues:
                    self.emit(
                        Record(
                            RecordType.POLICY_REJECTED,
                            f"settings rejected on reload, keeping the running ones: {issue}",
                            result="rejected",
                        )
                    )
                self.notifier.ready(self.status_text())
                return
        policy_set = self.load_policies(
            new_settings.policies_dir, allow_untrusted=new_settings.insecure_allow_untrusted_files
        )
        if policy_set.issues:
            # All or nothing: a half-applied policy set is worse than the old one.
            for issue in policy_set.issues:
                self.emit(
                    Record(
                        RecordType.POLICY_REJECTED,
                        f"policy rejected on reload, keeping the running policies: {issue}",
                        policy=Path(issue.file).stem,
                        result="rejected",
                    )
                )
            self.notifier.ready(self.status_text())
            return
        if (
            new_settings.dry_run != self.settings.dry_run
            or new_settings.cgroup_root != self.settings.cgroup_root
        ):
            self.emit(
                Record(
                    RecordType.POLICY_REJECTED,
                    "dry_run, cgroup_root and proc_root change only on restart; keeping the running values",
                    result="rejected",
                    priority=4,
                )
            )
            new_settings = new_settings.model_copy(
                update={
                    "dry_run": self.settings.dry_run,
                    "cgroup_root": self.settings.cgroup_root,
                    "proc_root": self.settings.proc_root,
                }
            )
        self.settings = new_settings
        old = self.policies
        self.install_policies(policy_set.policies)
        dropped = {
            name: p for name, p in old.items() if name not in self.policies or self.policies[name] != p
        }
        if dropped:
            # A removed or changed policy gives back what it changed, as on exit.
            self.apply(on_exit(dropped, self.state, self.clock.monotonic()), None)
            for key in [k for k in self.wakeups if k.policy in dropped]:
                self.wakeups.pop(key, None)
        self.emit_all(self._policy_records(policy_set))
        self.rescan()
        self.emit(
            Record(
                RecordType.DAEMON_RELOADED,
                f"reloaded: {len(self.policies)} policies active",
                result="reloaded",
            )
        )
        self.notifier.ready(self.status_text())

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.apply(on_exit(self.policies, self.state, self.clock.monotonic()), None)
        self.watcher.close()
        self.emit(Record(RecordType.DAEMON_STOPPING, "remediator stopping", result="stopped"))

    def run_once(self, settle_sec: float) -> None:
        """Observe every target twice, ``settle_sec`` apart, so rates can be measured; then decide once."""
        tick = _Tick()
        deadline = self.clock.monotonic() + settle_sec
        while self.clock.monotonic() < deadline:
            self.watcher.wait(deadline)
        for key in list(self.watcher.keys()):
            self.observe(key, fired=False, tick=tick)


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


def _write_pid_file(settings: Settings) -> Optional[Path]:
    from remediator.commands.reload import pid_file_path

    path = pid_file_path(settings)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        # Never through a link someone planted (root writing its pid through /run/x.tmp -> /etc/...):
        # a fresh file, created exclusively, then renamed over the name (rename replaces a link itself).
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(tmp, flags, 0o644), "w") as out:
            out.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
        return path
    except OSError:
        return None


def build_service(
    settings: Settings, clock: Clock, reload_settings: Optional[Callable[[], Settings]]
) -> Service:
    roots = KernelRoots(settings.cgroup_root, settings.proc_root)
    writer = make_writer(settings.log_target)
    store = StateStore(settings.state_file)
    executor = Executor(
        roots, store, clock, dry_run=settings.dry_run, retry_budget_sec=settings.write_retry_budget_sec
    )
    watcher = Watcher(roots, clock, settings.sampling_interval_sec)
    return Service(
        settings=settings,
        clock=clock,
        writer=writer,
        notifier=Notifier(),
        executor=executor,
        watcher=watcher,
        capabilities=probe(roots),
        reload_settings=reload_settings,
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
    pid_file = None if once else _write_pid_file(settings)
    try:
        service.start()
        if once:
            service.run_once(settle_sec=max(1.0, settings.sampling_interval_sec))
            service.watcher.close()
            return 0
        while not service.stopping:
            service.step()
        service.shutdown()
        return 0
    finally:
        if pid_file is not None:
            with contextlib.suppress(OSError):
                pid_file.unlink()


__all__ = ["Service", "build_service", "raise_open_file_limit", "run_service"]
