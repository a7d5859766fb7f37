"""The executor's foundation: its ledgers and retries, and the words of its outcomes.

``ExecutorBase`` holds what every action of ``remediator.daemon.executor.Executor``
shares: the kernel files it was handed (``remediator.daemon.kernel_files``: the
real ones, or dry-run's overlay), the state store (dry-run's is read-only), the
clock, reading a value back, retrying transient errors within a time budget
(tenacity, transient errors only), and completing an action's cause into the
record of its outcome. Each knob's write is its module's (``remediator.knobs``);
the owned-value services it is handed (write-ahead, restore), the recovery and
the dispatch are the Executor's. Here too: where a knob's ``KnobFile`` is for the
confined writer, and which owned knob an entry or a release names.
"""

from __future__ import annotations

import errno as errno_mod
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Tuple, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from remediator.clock import Clock
from remediator.daemon.confined_io import CgroupFile, ConfinementError, KernelFile, ProcFile
from remediator.daemon.kernel_files import KernelFiles, SnapshotT
from remediator.daemon.state_store import StateStore, StateUnwritable
from remediator.errors import CgroupGone, KernelError, KernelFileMissing, KernelTransient, RemediatorError
from remediator.kernel.memory_limits import parse_bytes, parse_limit
from remediator.knobs import owned_of, plugins
from remediator.knobs.base import Action, KnobFile, KnobPlugin, OwnedKnob, ReleaseOwnership
from remediator.records import PRIORITY_DEBUG, PRIORITY_ERR, Knob, Record, RecordType

# Exponential backoff for transient errors: 10 ms, 20 ms, ... capped, and
# never sleeping past the budget. With the default 2 s budget the worst case
# for one write is ~2 s plus the write itself, well under half of any sane
# WatchdogSec= (the service sends WATCHDOG=1 every WatchdogSec/2).
RETRY_FIRST_WAIT_SEC = 0.01
RETRY_MAX_WAIT_SEC = 0.25


T = TypeVar("T")


def owned_knob(kind: str, name: str) -> OwnedKnob:
    """The knob a state file entry belongs to (the schema lets only owned knobs' kinds in)."""
    owned = owned_of(kind, name)
    if owned is not None:
        return owned
    raise KeyError(f"no knob owns {kind} {name}")


@dataclass(frozen=True)
class Outcome:
    """What happened to one action: its result (a ``remediator.records.Result`` word, "would" for a
    write dry-run only pretended) and the records to write."""

    result: str
    records: Tuple[Record, ...]


def limit_text(value: Optional[int]) -> str:
    return "max" if value is None else str(value)


def parse_limit_of(text: str, target: KernelFile) -> Optional[int]:
    # The same strict parsers as the readers: one definition of what the kernel prints.
    return parse_limit(text, target.describe())


def parse_uint_of(text: str, target: KernelFile) -> int:
    return parse_bytes(text, target.describe())


@dataclass(frozen=True)
class ActionContext:
    """What every record about one action shares."""

    cause: Record
    action: Optional[Knob]  # None only for a sysctl outside the allow-list (refused)
    cgroup: Optional[str]

    def base(self) -> Record:
        cause = self.cause
        return replace(
            cause,
            action=cause.action or self.action,
            cgroup=cause.cgroup if cause.cgroup is not None else self.cgroup,
        )


@dataclass(frozen=True)
class Restored:
    """The outcome of putting one owned value back."""

    result: str  # restored | not_restored | gone
    before: str
    after: str
    detail: str  # empty for a plain restore
    unforgotten: Optional[StateUnwritable] = None


class ExecutorBase:
    def __init__(
        self,
        files: KernelFiles,
        store: StateStore,
        clock: Clock,
        retry_budget_sec: float = 2.0,
        *,
        sleep: Optional[Callable[[float], None]] = None,
    ) -> None:
        # Real, or dry-run's overlay and read-only store: chosen once by whoever builds the
        # executor, never asked here.
        self._files = files
        self._ledger = store
        self._clock = clock
        # Only the words of outcomes follow the mode (a record's dry-run flag, the core's "would").
        self._dry_run = files.swallows_writes
        self._retry_budget_sec = retry_budget_sec
        # Injected so tests drive retries with a FakeClock instead of sleeping.
        self._sleep: Callable[[float], None] = sleep if sleep is not None else time.sleep

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    def seen(self, snapshot: SnapshotT) -> SnapshotT:
        """A snapshot as the files this executor writes through answer (``KernelFiles.seen``): what the
        service decides on, so that in dry-run it is what the kernel would hold after our writes."""
        return self._files.seen(snapshot)

    # ==== kernel values ===========================================================
    def _read_value(self, owned: OwnedKnob, target: KernelFile) -> Optional[int]:
        return self._parse_value(owned, self._files.read(target), target)

    @staticmethod
    def _parse_value(owned: OwnedKnob, text: str, target: KernelFile) -> Optional[int]:
        return parse_limit_of(text, target) if owned.limit else parse_uint_of(text, target)

    def _retry(
        self, operation: Callable[[], T], retry_eagain: bool = True, budget_sec: Optional[float] = None
    ) -> T:
        """Run ``operation``, retrying transient kernel errors within the time budget."""
        budget = self._retry_budget_sec if budget_sec is None else budget_sec
        clock = self._clock
        start = clock.monotonic()
        backoff = wait_exponential(
            multiplier=RETRY_FIRST_WAIT_SEC, min=RETRY_FIRST_WAIT_SEC, max=RETRY_MAX_WAIT_SEC
        )

        def retryable(exc: BaseException) -> bool:
            if not isinstance(exc, KernelTransient):
                return False
            return retry_eagain or exc.errno != errno_mod.EAGAIN

        def out_of_budget(_state: RetryCallState) -> bool:
            return clock.monotonic() - start >= budget

        def wait(state: RetryCallState) -> float:
            # Never sleep past the budget: the last attempt happens at its end.
            return max(0.0, min(backoff(state), budget - (clock.monotonic() - start)))

        retrying = Retrying(
            retry=retry_if_exception(retryable),
            stop=out_of_budget,
            wait=wait,
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(operation)

    # ==== records ===================================================================
    @staticmethod
    def _context(action: Action, plugin: Optional[KnobPlugin]) -> ActionContext:
        if plugin is not None:
            return ActionContext(action.cause, plugin.knob, plugin.subject(action))
        if isinstance(action, ReleaseOwnership):
            owned = owned_by_file(action.cgroup, action.file)
            return ActionContext(action.cause, owned.knob if owned is not None else None, action.cgroup)
        # An action of no registered knob (refused): None only for a sysctl outside the allow-list.
        return ActionContext(action.cause, None, None)

    def _finish(
        self,
        ctx: ActionContext,
        result: str,
        *,
        before: str = "",
        after: str = "",
        detail: str = "",
        errno: str = "",
        extra: Optional[Dict[str, str]] = None,
        record_type: Optional[RecordType] = None,
        priority: Optional[int] = None,
    ) -> Outcome:
        """Complete the cause into the outcome's record.

        The message is the cause's, plus ": <detail>" when there is one. The
        record says what happened in the enforcing words, with ``dry_run``: the
        one place that words it for a reader ("would ...", result ``would``,
        no figures of work not done) is ``remediator.records.presented``, which
        every writer applies. The outcome's result tells the core "would" for
        a write dry-run only pretended: it owns the value as after a write (its
        snapshots show what the overlay answers), and a reclaim that did no work
        ends its follow-up.
        """
        base = ctx.base()
        message = base.message + (f": {detail}" if detail else "")
        outcome_result = result
        if self._dry_run and result in ("applied", "restored", "partial"):
            outcome_result = "would"
        record = replace(
            base,
            type=record_type if record_type is not None else self._record_type(base.type, result),
            message=message,
            result=result,
            before=before,
            after=after,
            errno=errno,
            dry_run=self._dry_run,
            extra={**base.extra, **(extra or {})},
            priority=priority if priority is not None else base.priority,
        )
        return Outcome(outcome_result, (record,))

    @staticmethod
    def _record_type(cause_type: RecordType, result: str) -> RecordType:
        if result in ("failed", "refused"):
            return RecordType.ACTION_FAILED
        if result in ("declined", "gone"):
            return RecordType.ACTION_DECLINED
        if result == "stood_back":
            return RecordType.STOOD_BACK
        return cause_type

    def _error_outcome(self, ctx: ActionContext, exc: RemediatorError) -> Outcome:
        if isinstance(exc, CgroupGone):
            # Cgroups come and go all day; this is not news worth a warning.
            return self._finish(ctx, "gone", detail="the cgroup is gone", priority=PRIORITY_DEBUG)
        if isinstance(exc, KernelFileMissing):
            return self._finish(ctx, "declined", detail=f"{exc.path} does not exist", errno=exc.errno_name)
        if isinstance(exc, StateUnwritable):
            return Outcome("refused", (self._store_trouble(ctx, exc, "refused"),))
        if isinstance(exc, ConfinementError):
            return self._finish(ctx, "refused", detail=f"refused: {exc}", priority=PRIORITY_ERR)
        if isinstance(exc, KernelError):
            return self._finish(
                ctx, "failed", detail=f"failed: {exc}", errno=exc.errno_name, priority=PRIORITY_ERR
            )
        return self._finish(ctx, "failed", detail=f"failed: {exc}", priority=PRIORITY_ERR)

    def _store_trouble(
        self, ctx: ActionContext, exc: StateUnwritable, result: str, consequence: str = ""
    ) -> Record:
        """A STATE_UNWRITABLE record. Result "refused": the change was not made
        because its original could not be recorded; otherwise ``consequence``
        says what the failed store update means for a change that was made."""
        if result == "refused":
            detail = (
                f"refused: the original value cannot be recorded in {exc.path} ({exc.message}), "
                "and what cannot be recorded cannot be undone"
            )
        else:
            detail = f"state file {exc.path} could not be written ({exc.message}): {consequence}"
        outcome = self._finish(
            ctx, result, detail=detail, errno=exc.errno_name, record_type=RecordType.STATE_UNWRITABLE
        )
        return outcome.records[0]


def kernel_file(target: KnobFile) -> KernelFile:
    """Where a knob's file is, for the confined writer."""
    return CgroupFile(target.cgroup, target.file) if target.cgroup is not None else ProcFile(target.file)


def owned_by_file(cgroup: Optional[str], file: str) -> Optional[OwnedKnob]:
    """The owned knob a ReleaseOwnership names: a cgroup's interface file, or a node-wide sysctl as
    actions name it, as sysctl(8) does, or as its proc path."""
    sysctl = file.rsplit("/", 1)[-1].removeprefix("vm.")
    for plugin in plugins():
        owned = plugin.owned
        if owned is None or owned.per_cgroup != (cgroup is not None):
            continue
        if (cgroup is not None and owned.target(cgroup).file == file) or (
            cgroup is None and plugin.knob == sysctl
        ):
            return owned
    return None
