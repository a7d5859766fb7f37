"""Arming PSI triggers (Documentation/accounting/psi.rst, "Monitoring for pressure thresholds").

Open the pressure file O_RDWR|O_NONBLOCK, write ``"<some|full> <stall_us>
<window_us>"`` (with the trailing NUL that ``PsiTrigger.kernel_bytes`` adds:
6.1's /proc/pressure writer eats the last byte), then poll the fd for POLLPRI.
The trigger lives as long as the fd; the caller owns it.

Some kernels refuse triggers outright (CONFIG_PSI off, psi=0, a build that
answers EINVAL, no privilege): the daemon then samples on a timer, so a
refusal is its own error type that the caller can tell from a vanished cgroup.
"""

from __future__ import annotations

import errno as errno_mod
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from remediator.errors import KernelError, KernelOther, kernel_error_from_oserror

# EBUSY is not here: it means this fd already holds a trigger (a caller bug),
# and it stays a KernelTransient through the ordinary classification.
REFUSAL_ERRNOS = frozenset(
    {errno_mod.EINVAL, errno_mod.EPERM, errno_mod.EACCES, errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP}
)


StallKind = Literal["some", "full"]


@dataclass(frozen=True)
class PsiTrigger:
    """A PSI trigger in the kernel's terms: "<some|full> <stall_us> <window_us>"."""

    kind: StallKind
    stall_us: int
    window_us: int

    @property
    def threshold_fraction(self) -> float:
        """Stall share of wall time the trigger stands for (stall / window)."""
        return self.stall_us / self.window_us

    def kernel_bytes(self) -> bytes:
        # The trailing NUL matters: 6.1's /proc/pressure writer overwrites the
        # buffer's last byte, which turned "... 1000000" into a 100 ms window.
        return f"{self.kind} {self.stall_us} {self.window_us}".encode("ascii") + b"\0"


class TriggerRefused(KernelError):
    """The kernel will not arm this trigger here; fall back to sampling.

    ``errno`` says why: EINVAL (bad spec, or a kernel that refuses them all),
    EPERM/EACCES (no privilege; since 6.5 unprivileged windows must be
    multiples of 2 s), ENOTSUP/EOPNOTSUPP (PSI disabled).
    """


def _trigger_error(exc: OSError, path: Path, cgroup_dir: Optional[Path], spec: PsiTrigger) -> KernelError:
    if exc.errno in REFUSAL_ERRNOS:
        spec_text = spec.kernel_bytes().rstrip(b"\0").decode("ascii")
        message = f"trigger {spec_text!r} refused: {exc.strerror or exc}"
        return TriggerRefused(path, message, exc.errno)
    return kernel_error_from_oserror(exc, path, cgroup_dir)


def arm_trigger(path: Path, spec: PsiTrigger, cgroup_dir: Optional[Path] = None) -> int:
    """Arm ``spec`` on the pressure file ``path`` and return the fd (the caller
    closes it). Raises ``TriggerRefused`` when the kernel refuses, another
    ``KernelError`` otherwise (``CgroupGone`` if ``cgroup_dir`` vanished).
    The fd is closed on every failure."""
    payload = spec.kernel_bytes()
    try:
        # O_NOFOLLOW: the trigger is a write; a symlink planted in a copied or
        # bind-mounted tree must not turn it into a write to another file.
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise _trigger_error(exc, path, cgroup_dir, spec) from exc
    try:
        written = os.write(fd, payload)
    except OSError as exc:
        os.close(fd)
        raise _trigger_error(exc, path, cgroup_dir, spec) from exc
    except BaseException:
        os.close(fd)
        raise
    if written != len(payload):
        # The kernel takes a trigger in one write; a partial one is not a trigger.
        os.close(fd)
        raise KernelOther(path, f"short write of trigger: {written} of {len(payload)} bytes")
    return fd


@dataclass(frozen=True)
class TriggerCheck:
    """The outcome of arming a trigger once and letting it go."""

    accepted: bool
    reason: str
    errno: Optional[int] = None

    @property
    def errno_name(self) -> str:
        return errno_mod.errorcode.get(self.errno, str(self.errno)) if self.errno is not None else ""


def check_trigger(path: Path, spec: PsiTrigger) -> TriggerCheck:
    """Arm ``spec`` on ``path`` and close it at once; never raises a KernelError.

    Arming writes no setting: the trigger exists only while the fd is open.
    """
    try:
        fd = arm_trigger(path, spec)
    except KernelError as exc:
        what = (
            exc.message if isinstance(exc, TriggerRefused) else f"trigger could not be armed: {exc.message}"
        )
        errno_note = f" ({exc.errno_name})" if exc.errno is not None else ""
        return TriggerCheck(accepted=False, reason=f"{path}: {what}{errno_note}", errno=exc.errno)
    os.close(fd)
    return TriggerCheck(accepted=True, reason=f"PSI triggers are accepted on {path}")
