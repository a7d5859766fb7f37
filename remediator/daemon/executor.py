"""The executor: the only part of remediator that changes anything.

The decision core asks (``remediator.knobs``: each knob's actions); the executor checks the
world again and acts, or says why it did not. Its rules:

- **Re-read before writing.** A value that is not what the core expected has
  another writer (systemd's MemoryHigh=, kubelet, an operator): we stand back
  and never fight it.
- **Record before the first write.** The original value goes to the state
  store (on disk, atomically) before the kernel value changes; if it cannot be
  recorded the change is refused, because it could not be undone.
- **Restore only our own values.** A value is put back only if it is still
  the one we wrote; otherwise someone else owns it now.
- **Dry-run is decided once, by whoever builds the executor.** It is handed
  the kernel files (``remediator.daemon.kernel_files``) and the state store:
  the real ones, or dry-run's overlay, which opens nothing for writing and
  answers reads as the kernel would after the writes it swallowed, and a
  read-only store, which loads what a previous run left and keeps this run's
  originals in memory. The executor and the knobs go the same way in both,
  so a sequence of actions produces the same records as in enforcing mode,
  with ``dry_run=True`` (a reader sees result "would" and the message
  prefixed with "would ": ``remediator.records.presented``). The decision core therefore words
  every ``cause.message`` as a lower-case verb phrase ("reclaim 512.0 MiB of
  page cache from ...", "set memory.high of ... to ...").
- **Errors end here.** Every kernel error becomes an outcome and a record
  ("gone", "failed", "refused", ...); ``execute`` never raises. Transient
  errors (EBUSY, EINTR, EAGAIN except from memory.reclaim, where it means
  partial success) are retried within a small time budget so that a busy
  kernel cannot stall the loop or the watchdog.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Dict, List, Optional, Tuple

from remediator.daemon.executor_base import (
    ActionContext,
    ExecutorBase,
    Outcome,
    Restored,
    kernel_file,
    limit_text,
    owned_by_file,
    owned_knob,
    parse_uint_of,
)
from remediator.daemon.state_schema import OwnedValue
from remediator.daemon.state_store import StateUnwritable
from remediator.errors import (
    CgroupGone,
    RemediatorError,
)
from remediator.knobs import owned_of, plugin_for
from remediator.knobs.base import Action, KnobFile, OwnedKnob, ReleaseOwnership
from remediator.knobs.sysctl import RestoreSysctl, SetSysctl
from remediator.records import PRIORITY_DEBUG, PRIORITY_ERR, Record, RecordType, Result


class Executor(ExecutorBase):
    # ==== the entry points =====================================================
    def execute(self, action: Action) -> Outcome:
        """Carry out one action; never raises."""
        plugin = plugin_for(action)
        ctx = self._context(action, plugin)
        try:
            if plugin is not None:
                return plugin.execute(action, KnobIO(self, ctx))
            if isinstance(action, ReleaseOwnership):
                return self._release(action, ctx)
            if isinstance(action, (SetSysctl, RestoreSysctl)):
                detail = f"vm.{action.name} is not a sysctl remediator writes"
                return self._finish(ctx, "refused", detail=detail)
            return self._finish(ctx, "failed", detail=f"unknown action {type(action).__name__}")
        except RemediatorError as exc:
            return self._error_outcome(ctx, exc)
        except Exception as exc:
            # A bug here must cost one action, not the daemon (and its rollbacks).
            return self._finish(
                ctx, "failed", detail=f"internal error {type(exc).__name__}: {exc}", priority=PRIORITY_ERR
            )

    def recover(self) -> Tuple[Record, ...]:
        """Start-up: give back every value a previous run left changed (crash recovery).

        Loads the state store (a bad file is quarantined, never trusted), then
        restores each recorded original under the usual rule (only if the
        kernel still holds our value), skipping cgroups that are gone. The store
        is empty afterwards. In dry-run (the overlay, a read-only store) it
        reports what it would restore and changes nothing, not even the file.
        """
        records: List[Record] = list(self._ledger.load())
        for entry in self._ledger.entries():
            records.extend(self._recover_entry(entry))
        return tuple(records)

    def forget_gone_cgroups(self) -> Tuple[Record, ...]:
        """Drop the originals of cgroups that are gone (the service asks at every rescan), so a
        removed cgroup's entry leaves the state file within one rescan, whatever the churn."""
        return self._drop_gone_cgroups()

    # ==== actions ===============================================================
    def _set_owned(
        self,
        ctx: ActionContext,
        owned: OwnedKnob,
        name: str,
        value: Optional[int],
        expected: Optional[int],
        check_expected: bool,
    ) -> Outcome:
        """Re-read, stand back or record the original, write, confirm."""
        ledger = self._ledger
        kind = owned.kind
        target = kernel_file(owned.target(name))
        records: List[Record] = []
        cgroup_id: Optional[int] = None
        if owned.per_cgroup:
            cgroup_id = self._retry(lambda: self._files.cgroup_id(name))
            existing = ledger.get(kind, name)
            if existing is None or existing.cgroup_id not in (None, cgroup_id):
                records.extend(self._drop_gone_cgroups())
        current = self._retry(lambda: self._read_value(owned, target))
        if check_expected and current != expected:
            return self._finish(
                ctx,
                "stood_back",
                before=limit_text(current),
                after=limit_text(current),
                detail=(
                    f"stood back: {target.describe()} is {owned.format(current)}, not the expected "
                    f"{owned.format(expected)}; another writer (systemd, kubelet, an operator) changed "
                    "it and owns it now"
                ),
                record_type=RecordType.STOOD_BACK,
            )
        if owned.refuse_zero and current == 0:
            # 0 is the policy validator's "dangerous" value: someone chose it on purpose, and an
            # original of 0 is one no restore should ever write back.
            return self._finish(
                ctx,
                "declined",
                before="0",
                after="0",
                detail=(
                    f"declined: {owned.describe(name)} is 0 (set on purpose by someone else): left as it is"
                ),
            )
        # StateUnwritable from here means "refused": nothing has been written yet.
        ledger.record_and_begin_write(
            kind, name, current, ctx.cause.policy, self._clock.wall(), value, cgroup_id
        )
        data = limit_text(value).encode("ascii")
        try:
            self._retry(lambda: self._files.write(target, data))
        except CgroupGone:
            # Nothing left to restore: do not keep an original for a dead cgroup.
            with contextlib.suppress(StateUnwritable):
                ledger.drop(kind, name)
            raise
        except Exception:
            self._forget_pending(kind, name)
            raise
        try:
            ledger.update_ours(kind, name, value)
        except StateUnwritable as exc:
            # Written, and the announced value on disk still marks it as ours,
            # so a restore (or a recovery after a crash) will still give it back.
            records.append(
                self._store_trouble(ctx, exc, "applied", "the write happened but could not be confirmed")
            )
        outcome = self._finish(ctx, "applied", before=limit_text(current), after=limit_text(value))
        return Outcome(outcome.result, outcome.records + tuple(records))

    def _drop_gone_cgroups(self) -> Tuple[Record, ...]:
        """Forget the originals of cgroups that are gone (or were created again) before a new one
        is recorded: the file then holds live clamps only, whatever the churn of pods around it."""
        records: List[Record] = []
        ledger = self._ledger
        for entry in ledger.entries():
            owned = owned_of(entry.kind, entry.name)
            if owned is None or not owned.per_cgroup or self._same_cgroup(entry):
                continue
            try:
                ledger.drop(entry.kind, entry.name)
            except StateUnwritable:
                continue  # the new recording will meet the same trouble and say so
            records.append(
                Record(
                    RecordType.ROLLED_BACK,
                    f"forget the original {owned.describe(entry.name)}: the cgroup it belonged to is gone",
                    policy=entry.policy,
                    cgroup=entry.name,
                    action=owned.knob,
                    result=Result.GONE,
                    dry_run=self._dry_run,
                    priority=PRIORITY_DEBUG,
                )
            )
        return tuple(records)

    def _same_cgroup(self, entry: OwnedValue) -> bool:
        """Whether the cgroup an entry was recorded for is still there (not gone, not created again)."""
        try:
            current_id = self._files.cgroup_id(entry.name)
        except RemediatorError:
            return False
        return entry.cgroup_id is None or entry.cgroup_id == current_id

    def _forget_pending(self, kind: str, name: str) -> None:
        # A stale announcement left on disk only widens what a restore accepts as ours.
        with contextlib.suppress(StateUnwritable):
            self._ledger.abandon_write(kind, name)

    def _restore_action(self, owned: OwnedKnob, name: str, ctx: ActionContext) -> Outcome:
        entry = self._ledger.get(owned.kind, name)
        if entry is None:
            return self._finish(
                ctx, "not_restored", detail="no original value recorded: nothing of ours to give back"
            )
        return self._restored_outcome(ctx, self._restore_entry(entry))

    def _release(self, action: ReleaseOwnership, ctx: ActionContext) -> Outcome:
        """Forget a recorded original without writing (the core gave the value up)."""
        owned = owned_by_file(action.cgroup, action.file)
        if owned is None:
            return self._finish(ctx, "declined", detail=f"{action.file} is not a value remediator owns")
        self._ledger.drop(owned.kind, action.cgroup if action.cgroup is not None else owned.knob.value)
        return self._finish(ctx, "applied")

    # ==== restoring ==============================================================
    def _restore_entry(self, entry: OwnedValue) -> Restored:
        """Put ``entry.original`` back if the kernel (as the files answer) still holds our value."""
        owned = owned_knob(entry.kind, entry.name)
        target = kernel_file(owned.target(entry.name))
        try:
            current = self._retry(lambda: self._read_value(owned, target))
        except CgroupGone:
            self._forget(entry)
            return Restored("gone", "", "", "the cgroup is gone")
        if owned.per_cgroup and not self._same_cgroup(entry):
            self._forget(entry)
            return Restored(
                "gone",
                "",
                "",
                "the cgroup it was recorded for is gone; this one was created again under its name",
            )
        before = limit_text(current)
        original = limit_text(entry.original)
        if current == entry.original:
            unforgotten = self._forget(entry)
            return Restored("restored", before, original, "already at its original value", unforgotten)
        if not entry.is_ours(current):
            unforgotten = self._forget(entry)
            return Restored(
                "not_restored",
                before,
                before,
                f"not restored: it is now {owned.format(current)}, not the "
                f"{owned.format(entry.ours)} we set; another writer changed it since, "
                "and it is theirs now",
                unforgotten,
            )
        data = original.encode("ascii")
        try:
            self._retry(lambda: self._files.write(target, data))
        except CgroupGone:
            self._forget(entry)
            return Restored("gone", before, "", "the cgroup is gone")
        return Restored("restored", before, original, "", self._forget(entry))

    def _forget(self, entry: OwnedValue) -> Optional[StateUnwritable]:
        try:
            self._ledger.drop(entry.kind, entry.name)
        except StateUnwritable as exc:
            return exc
        return None

    def _restored_outcome(
        self, ctx: ActionContext, restored: Restored, not_restored_type: RecordType = RecordType.STOOD_BACK
    ) -> Outcome:
        """The records of a restore. Leaving another writer's value in place is,
        for an action, the same event as standing back; recovery keeps its own type."""
        result = restored.result
        outcome = self._finish(
            ctx,
            result,
            before=restored.before,
            after=restored.after,
            detail=restored.detail,
            record_type=not_restored_type if result == "not_restored" else None,
            priority=PRIORITY_DEBUG if result == "gone" else None,
        )
        if restored.unforgotten is None:
            return outcome
        trouble = self._store_trouble(
            ctx, restored.unforgotten, result, "the value is still recorded as ours"
        )
        return Outcome(outcome.result, (*outcome.records, trouble))

    def _recover_entry(self, entry: OwnedValue) -> Tuple[Record, ...]:
        owned = owned_knob(entry.kind, entry.name)
        ctx = ActionContext(
            cause=Record(
                RecordType.STATE_RECOVERED,
                f"restore {owned.describe(entry.name)} to {owned.format(entry.original)}, "
                f"left at {owned.format(entry.ours)} by a previous run (policy {entry.policy})",
                policy=entry.policy,
            ),
            # A restore or a recovery is recorded under the knob it puts back (its
            # REMEDIATOR_RESULT says restored/recovered), so one journal filter finds a knob's whole life.
            action=owned.knob,
            cgroup=entry.name if owned.per_cgroup else None,
        )
        if owned.per_cgroup and not self._files.cgroup_exists(entry.name):
            self._forget(entry)
            return self._finish(
                ctx, "gone", detail="the cgroup no longer exists", priority=PRIORITY_DEBUG
            ).records
        try:
            restored = self._restore_entry(entry)
        except RemediatorError as exc:
            # The store is emptied anyway: the record carries the original so an
            # operator can put it back by hand.
            self._forget(entry)
            return self._error_outcome(ctx, exc).records
        return self._restored_outcome(ctx, restored, not_restored_type=RecordType.STATE_RECOVERED).records


class KnobIO:
    """The executor's services as a knob's write sees them (``remediator.knobs.base.KnobWriter``),
    bound to one action: its records are that action's."""

    def __init__(self, executor: Executor, ctx: ActionContext) -> None:
        self._executor = executor
        self._ctx = ctx

    @property
    def retry_budget_sec(self) -> float:
        return self._executor._retry_budget_sec

    def monotonic(self) -> float:
        return self._executor._clock.monotonic()

    def exists(self, target: KnobFile) -> bool:
        return self._executor._files.exists(kernel_file(target))

    def read_uint(self, target: KnobFile) -> int:
        where = kernel_file(target)
        files = self._executor._files
        return self._executor._retry(lambda: parse_uint_of(files.read(where), where))

    def write(
        self, target: KnobFile, text: str, retry_eagain: bool = True, budget_sec: Optional[float] = None
    ) -> None:
        where = kernel_file(target)
        write = functools.partial(self._executor._files.write, where, text.encode("ascii"))
        self._executor._retry(write, retry_eagain=retry_eagain, budget_sec=budget_sec)

    def finish(
        self,
        result: str,
        *,
        before: str = "",
        after: str = "",
        detail: str = "",
        extra: Optional[Dict[str, str]] = None,
    ) -> Outcome:
        return self._executor._finish(
            self._ctx, result, before=before, after=after, detail=detail, extra=extra
        )

    def set_owned(
        self, knob: OwnedKnob, name: str, value: Optional[int], expected: Optional[int], check_expected: bool
    ) -> Outcome:
        return self._executor._set_owned(self._ctx, knob, name, value, expected, check_expected)

    def restore(self, knob: OwnedKnob, name: str) -> Outcome:
        return self._executor._restore_action(knob, name, self._ctx)


__all__ = ["Executor", "Outcome"]
