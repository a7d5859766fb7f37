"""``remediator reload``: send SIGHUP to the running daemon.

For ``ExecReload=`` on minimal systems that have no ``/bin/kill``. The PID is
checked to belong to a remediator process first, so a stale PID file can
never make us signal an unrelated process that reused the number.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Optional, TextIO

from remediator.settings import Settings


def pid_file_path(settings: Settings) -> Path:
    return settings.state_file.parent / "remediator.pid"


def _is_remediator(pid: int, proc_root: Path) -> bool:
    try:
        cmdline = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return b"remediator" in cmdline


def run_reload(settings: Settings, pid: Optional[int], err: TextIO) -> int:
    if pid is None:
        path = pid_file_path(settings)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError) as exc:
            err.write(f"remediator reload: cannot read the daemon's PID from {path}: {exc}\n")
            return 1
    if pid <= 1:
        err.write(f"remediator reload: refusing to signal PID {pid}\n")
        return 1
    if not _is_remediator(pid, settings.proc_root):
        err.write(f"remediator reload: PID {pid} is not a running remediator daemon\n")
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        err.write(f"remediator reload: cannot signal PID {pid}: {exc.strerror}\n")
        return 1
    return 0
