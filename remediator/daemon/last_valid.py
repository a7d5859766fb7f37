"""The last valid policy set, kept beside the state file: an invalid set never replaces a valid one.

A reload already refused an invalid set and kept the running one. A start had
no running set to keep, and ran the valid subset: a restart (or a reboot)
after someone broke one policy file silently left the cgroups that file
protected unprotected, with the service ``active``. Now a start follows the
reload's rule: every valid set that was run is copied here, and a start that
finds the directory invalid runs this copy instead (DEGRADED, at error
priority, with the located errors in ``STATUS=``); with no copy it refuses to
start.

The copy is the policy files' bytes, in a directory only root can write
(``<state dir>/last-valid-policies``, 0700), replaced as a whole: written into
a fresh temporary directory, then renamed over the old one (the old one is
removed after). It is loaded with the same loader and trust rules as the
policy directory, so a copy someone tampered with is refused like any file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from remediator.daemon.service_records import degraded_record
from remediator.errors import RemediatorError
from remediator.policy.loader import PolicySet, load_policy_dir
from remediator.records import Record
from remediator.text import plural

KEPT_DIRECTORY_NAME = "last-valid-policies"


class StartRefused(RemediatorError):
    """The policy directory is invalid and no valid set was ever kept: running part of it would
    silently unprotect what the invalid part protected."""


class PoliciesNotKept(RemediatorError):
    """The copy could not be written (the set still runs; the next start has no fallback)."""


def kept_directory(data_dir: Path) -> Path:
    """Under ``Settings.persistent_dir``: /var/lib/remediator in the package, so a reboot keeps it."""
    return data_dir / KEPT_DIRECTORY_NAME


@dataclass(frozen=True)
class LastValidPolicies:
    directory: Path

    def keep(self, files: Sequence[Path]) -> None:
        """Replace the copy with ``files`` (the policy files of a set that is running)."""
        parent = self.directory.parent
        fresh = parent / f".{self.directory.name}.new.{os.getpid()}"
        old = parent / f".{self.directory.name}.old.{os.getpid()}"
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(mode=0o700)
            for path in files:
                data = path.read_bytes()
                fd = os.open(fresh / path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            if self.directory.exists():
                os.rename(self.directory, old)
            os.rename(fresh, self.directory)
        except OSError as exc:
            shutil.rmtree(fresh, ignore_errors=True)
            if old.exists() and not self.directory.exists():
                os.rename(old, self.directory)
            raise PoliciesNotKept(f"{self.directory}: {exc.strerror or exc}") from exc
        shutil.rmtree(old, ignore_errors=True)

    def load(self, *, allow_untrusted: bool = False) -> Optional[PolicySet]:
        """The kept set, or None when there is none (never kept, or not a valid set any more)."""
        if not self.directory.is_dir():
            return None
        kept = load_policy_dir(self.directory, allow_untrusted=allow_untrusted)
        return kept if kept.ok and kept.policies else None


def policies_to_run(
    policy_set: PolicySet, keeper: LastValidPolicies, *, allow_untrusted: bool
) -> Tuple[PolicySet, str, Optional[Record]]:
    """The reload's rule at start: an invalid set never replaces a valid one.

    A valid set runs (the caller keeps it: ``keep``); an invalid one is replaced by
    the last kept set: (that set, the DEGRADED status, its record). With none kept,
    ``StartRefused``.
    """
    if not policy_set.issues:
        return policy_set, "", None
    first = str(policy_set.issues[0])
    kept = keeper.load(allow_untrusted=allow_untrusted)
    if kept is None:
        raise StartRefused(
            f"{plural(len(policy_set.issues), 'invalid policy setting', 'invalid policy settings')} "
            f"(first: {first}) and no last valid policy set under {keeper.directory}: refusing to "
            "start, because running the valid part would leave what the rest protects unprotected"
        )
    status = f"DEGRADED: running the last valid policies; {first}"
    return kept, status, degraded_record(status, keeper.directory, kept)
