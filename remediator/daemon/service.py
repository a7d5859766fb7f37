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

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Optional, Protocol, Sequence, Set, Tuple, Union

from remediator import __version__
from remediator.clock import Clock
from remediator.core.decide import Decision, decide
from remediator.core.outcomes import forget, note_outcome, on_exit
from remediator.core.state import CoreConfig, CoreState, Observation, TargetKey, initial_state
from remediator.daemon.coalesce import RecordCoalescer
from remediator.daemon.discovery import desired_targets
from remediator.daemon.executor import Executor
from remediator.daemon.flight_recorder import FlightRecorder
from remediator.daemon.journal import RecordWriter
from remediator.daemon.last_valid import (
    LastValidPolicies,
    PoliciesNotKept,
    StartRefused,
    kept_directory,
    policies_to_run,
)
from remediator.daemon.look_timing import DECIDED_FIELD, WOKEN_FIELD, WRITTEN_FIELD, monotonic_us, with_timing
from remediator.daemon.metrics_feed import MetricsFeed, annotate
from remediator.daemon.notify import Notifier
from remediator.daemon.service_records import (
    not_kept_record,
    policy_records,
    rejected_on_reload,
    restart_only_changes,
    watch_ended,
    watch_record,
)
from remediator.daemon.watcher import Fired, Gone, SampleDue, WatchChange, Watcher
from remediator.errors import CgroupGone, KernelError, KernelParseError
from remediator.identity import Identity, IdentityResolver, parse_cgroup
from remediator.kernel.capabilities import Capabilities
from remediator.kernel.roots import KernelRoots
from remediator.kernel.snapshot import read_cgroup_snapshot, read_node_snapshot
from remediator.metrics import PolicyState
from remediator.policy.compiled import Policy
from remediator.policy.loader import PolicySet, load_policy_dir
from remediator.readings import CgroupSnapshot, NodeSnapshot
from remediator.records import Record, RecordType
from remediator.settings import Settings, SettingsError
from remediator.text import plural


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
    # Who each cgroup is (records, target.kubernetes); None: from the path alone (no pod names).
    identities: Optional[IdentityResolver] = None
    # Prometheus metrics; None: none kept (tests of other things).
    metrics: Optional[MetricsFeed] = None
    # The last minutes of pressured targets, written at an incident; None: none kept (replay, tests).
    flight_recorder: Optional[FlightRecorder] = None
    policies: Dict[str, Policy] = field(default_factory=dict)
    _policy_counts: Dict[PolicyState, int] = field(default_factory=dict)
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
    coalescer: RecordCoalescer = field(default_factory=RecordCoalescer)
    # Why the service runs the last valid set instead of the directory's ("" when it does not).
    _degraded: str = ""

    @property
    def roots(self) -> KernelRoots:
        return KernelRoots(self.settings.cgroup_root, self.settings.proc_root)

    @property
    def dry_run(self) -> bool:
        # The executor's mode, chosen once where it was built (``run.build_executor``).
        return self.executor.dry_run

    def identify(self, cgroup: str) -> Identity:
        return self.identities.identify(cgroup) if self.identities is not None else parse_cgroup(cgroup)

    # ---- records -------------------------------------------------------
    def emit(self, record: Record) -> None:
        """The one way out for a record: marked dry-run, given its cgroup's identity, written, counted."""
        if self.dry_run and not record.dry_run:
            record = replace(record, dry_run=True)
        record = annotate(record, self.identify)
        if self.metrics is not None:
            self.metrics.observe(record)  # every record counts, coalesced or not
        incident = self.flight_recorder.noticed(record) if self.flight_recorder is not None else None
        for admitted in self.coalescer.admit(record, self.clock.monotonic()):
            self.writer.write(admitted)
        if incident is not None:
            self.emit(incident)

    def flush_held_records(self) -> None:
        """Write the counts of every coalesced kind now (stop; a replay's end)."""
        self._write_held(self.coalescer.flush(self.clock.monotonic()))

    def _write_held(self, records: Sequence[Record]) -> None:
        """Summaries of coalesced records (already annotated and counted)."""
        for record in records:
            self.writer.write(record)

    def emit_all(self, records: Sequence[Record]) -> None:
        for r in records:
            self.emit(r)

    # ---- policies ------------------------------------------------------
    def install_policies(self, policy_set: PolicySet) -> None:
        self.policies = {p.name: p for p in policy_set.policies if p.enabled}
        if self.metrics is not None:
            self.metrics.policies_loaded(policy_set)
        enabled = len(self.policies)
        self._policy_counts = {
            PolicyState.LOADED: enabled,
            PolicyState.DISABLED: len(policy_set.policies) - enabled,
        }

    def _reload_refused(self, attempt: Optional[PolicySet]) -> None:
        if self.metrics is not None:
            self.metrics.reload_refused(self._policy_counts, attempt)
        self.notifier.ready(self.status_text())

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
        self.emit_all(policy_records(policy_set))
        self.install_policies(self._policies_to_run(policy_set))
        self.emit_all(self.executor.recover())
        self.rescan()
        interval = self.notifier.watchdog_interval_sec()
        now = self.clock.monotonic()
        self._next_watchdog = now + interval if interval else None
        self.notifier.ready(self.status_text())

    def _policies_to_run(self, policy_set: PolicySet) -> PolicySet:
        """The reload's rule at start too (``last_valid.policies_to_run``); a valid set is kept."""
        keeper = LastValidPolicies(kept_directory(self.settings.persistent_dir))
        chosen, self._degraded, record = policies_to_run(
            policy_set, keeper, allow_untrusted=self.settings.insecure_allow_untrusted_files
        )
        if record is not None:
            self.emit(record)
        elif not self.dry_run:  # dry-run writes nothing, not even this copy
            try:
                keeper.keep(policy_set.files)
            except PoliciesNotKept as exc:
                self.emit(not_kept_record(exc))
        return chosen

    def status_text(self) -> str:
        stats = self.watcher.stats()
        mode = "dry-run" if self.dry_run else "enforcing"
        running = (
            f"{mode}: {plural(len(self.policies), 'policy', 'policies')}, watching "
            f"{plural(stats.armed, 'target')} by PSI trigger, {stats.sampling} by sampling"
        )
        return f"{self._degraded} ({running})" if self._degraded else running

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
            self.emit(watch_record(change, self.settings.sampling_interval_sec, first))
        elif change.kind in ("armed", "sampling"):
            self.emit(watch_record(change, self.settings.sampling_interval_sec, False))
        elif change.kind in ("removed", "gone"):
            self._forget(key, change.kind)

    def _forget(self, key: TargetKey, why: str) -> None:
        forget(self.state, key)
        self.wakeups.pop(key, None)
        if key not in self._watching:
            return
        self._watching.discard(key)
        if self.flight_recorder is not None and all(k.cgroup != key.cgroup for k in self._watching):
            self.flight_recorder.forget(key.cgroup)
        self.emit(watch_ended(key, why))

    def rescan(self) -> None:
        started = self.clock.monotonic()
        interval = self.settings.rescan_interval_sec
        self._next_rescan = started + interval
        try:
            desired = desired_targets(self.roots, list(self.policies.values()), identify=self.identify)
        except KernelError as exc:
            # A partial walk would look like cgroups disappearing: keep the current targets.
            self.emit(
                Record(
                    RecordType.OBSERVATION_FAILED,
                    f"cannot walk the cgroup tree, keeping current targets: {exc}",
                    result="failed",
                    errno=exc.errno_name,
                    priority=4,
                )
            )
            return
        changes = self.watcher.sync(desired)
        self.emit_all(self.executor.forget_gone_cgroups())
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
                tick.node = self.executor.seen(read_node_snapshot(self.roots))  # dry-run: as overlaid
            except (KernelError, KernelParseError):
                tick.node = None
        return tick.node

    def observe(self, key: TargetKey, fired: bool, tick: _Tick) -> None:
        policy = self.policies.get(key.policy)
        if policy is None:
            return
        # The decision is timed at its look (before the files are read), not when the core has
        # finished: a rung's verify time (taken_at + verify_sec) then counts from what the kernel
        # showed, whatever reading and deciding cost. Under emulation that cost was 20-225 ms, and
        # with verify_sec equal to the trigger's window it moved the verify look past the next
        # event, so whether sustained pressure was reclaimed at every event depended on the
        # daemon's own scheduling (README, Record and replay, Fidelity).
        looked_at = self.clock.monotonic()
        node = self._node(tick)
        try:
            if key.cgroup is None:
                if node is None:
                    return
                snapshot: Union[CgroupSnapshot, NodeSnapshot] = node
            else:
                snapshot = self.executor.seen(read_cgroup_snapshot(self.roots, key.cgroup))
        except CgroupGone:
            self.watcher.drop(key)
            self._forget(key, "gone")
            return
        except (KernelError, KernelParseError) as exc:
            self.emit(
                Record(
                    RecordType.OBSERVATION_FAILED,
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
        decision = decide(
            policy, self.state.view(key), obs, looked_at, CoreConfig(self.settings.node_actions_max_per_hour)
        )
        timing: Optional[Dict[str, str]] = None
        if tick.woken_at is not None:
            timing = {
                WOKEN_FIELD: monotonic_us(tick.woken_at),
                DECIDED_FIELD: monotonic_us(self.clock.monotonic()),
            }
        if self.flight_recorder is not None:  # before the decision's records: an incident holds this look
            pressured = fired or decision.targets[key].pressured_since is not None
            incident = self.flight_recorder.observed(key.policy, key.cgroup, snapshot, node, fired, pressured)
            self.emit_all([incident] if incident is not None else [])
        self.apply(decision, key, timing)

    def apply(
        self, decision: Decision, key: Optional[TargetKey], timing: Optional[Dict[str, str]] = None
    ) -> None:
        self.state.apply(decision)
        self.emit_all(with_timing(decision.records, timing))
        for action in decision.actions:
            outcome = self.executor.execute(action)
            written_at = self.clock.monotonic()
            note_outcome(self.state, action, outcome.result, written_at)
            written = None if timing is None else {**timing, WRITTEN_FIELD: monotonic_us(written_at)}
            self.emit_all(with_timing(outcome.records, written))
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
        metrics_due = self.metrics.next_due_at() if self.metrics is not None else None
        if metrics_due is not None:
            candidates.append(metrics_due)
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
        self._write_held(self.coalescer.due(now))
        if self.metrics is not None:
            record = self.metrics.write_if_due(self._refresh_metrics)
            if record is not None:
                self.emit(record)

    # ---- metrics -------------------------------------------------------
    def _refresh_metrics(self) -> None:
        if self.metrics is not None and self.metrics.path is not None:
            modes = [(key, self.watcher.mode_of(key)) for key in list(self.watcher.keys())]
            self.metrics.refresh(modes, self.state, self.identify, self.dry_run)

    def write_metrics_now(self) -> None:
        """Write the metrics file whatever the interval: at stop and at the end of ``--once``."""
        if self.metrics is not None:
            self._refresh_metrics()
            record = self.metrics.write_now()
            if record is not None:
                self.emit(record)

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
                self.emit_all([rejected_on_reload(issue, settings=True) for issue in exc.issues])
                self._reload_refused(None)
                return
        policy_set = self.load_policies(
            new_settings.policies_dir, allow_untrusted=new_settings.insecure_allow_untrusted_files
        )
        if policy_set.issues:
            # All or nothing: a half-applied policy set is worse than the old one.
            self.emit_all([rejected_on_reload(issue, settings=False) for issue in policy_set.issues])
            self._reload_refused(policy_set)
            return
        self._apply_settings(new_settings)
        old = self.policies
        self.install_policies(self._policies_to_run(policy_set))
        dropped = {
            name: p for name, p in old.items() if name not in self.policies or self.policies[name] != p
        }
        if dropped:
            # A removed or changed policy gives back what it changed, as on exit.
            self.apply(on_exit(dropped, self.state, self.clock.monotonic()), None)
            for key in [k for k in self.wakeups if k.policy in dropped]:
                self.wakeups.pop(key, None)
        self.emit_all(policy_records(policy_set))
        self.rescan()
        self.emit(
            Record(
                RecordType.DAEMON_RELOADED,
                f"reloaded: {plural(len(self.policies), 'policy', 'policies')} active",
                result="reloaded",
            )
        )
        self.notifier.ready(self.status_text())

    def _apply_settings(self, new_settings: Settings) -> None:
        """Take reloaded settings: every key is applied, or refused by name and kept as it runs."""
        new_settings, refused = restart_only_changes(self.settings, new_settings)
        self.emit_all(refused)
        if new_settings.pods_log_dir != self.settings.pods_log_dir and self.identities is not None:
            self.identities = IdentityResolver(pods_log_dir=new_settings.pods_log_dir, clock=self.clock)
        if self.metrics is not None:
            self.metrics.configure(new_settings)
        if self.flight_recorder is not None:
            self.flight_recorder.configure(new_settings)
        self.settings = new_settings

    def shutdown(self) -> None:
        """Give back what the policies want restored on exit, then stop: the end of a run and of --once."""
        self.notifier.stopping()
        self.apply(on_exit(self.policies, self.state, self.clock.monotonic()), None)
        self.flush_held_records()
        self.write_metrics_now()  # before the watcher closes: the file shows what was watched
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


__all__ = ["DECIDED_FIELD", "WOKEN_FIELD", "WRITTEN_FIELD", "Service", "StartRefused"]
