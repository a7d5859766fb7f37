"""``remediator reload``: check the settings and policies, then send SIGHUP to the running daemon.

For ``ExecReload=`` (minimal systems have no ``/bin/kill``), so that
``systemctl reload remediator`` says whether the new configuration was
taken: the settings (already loaded by the CLI) and every policy are
validated first, as ``check`` does, and an invalid set exits 1 with every
error on stderr *without* signalling: systemd reports the reload as failed
and the daemon keeps running the set it has. Exit 0 only after a verified
daemon was signalled.

The daemon is the PID in its PID file, or ``--pid`` (systemd passes
``$MAINPID``); either way it is signalled only if ``/proc/PID`` shows
remediator's ``run`` (``remediator.daemon.pid_file.daemon_problem``).
"""

from __future__ import annotations

import signal
from typing import Optional, TextIO

from remediator.daemon.pid_file import PidFileError, pid_file_path, read_pid_file, signal_daemon
from remediator.policy.loader import load_policy_dir
from remediator.settings import Settings
from remediator.text import escape_name, plural


def run_reload(settings: Settings, pid: Optional[int], err: TextIO) -> int:
    def say(line: str) -> None:
        err.write(escape_name(f"remediator reload: {line}") + "\n")

    policy_set = load_policy_dir(
        settings.policies_dir, allow_untrusted=settings.insecure_allow_untrusted_files
    )
    if policy_set.issues:
        for issue in policy_set.issues:
            err.write(escape_name(str(issue)) + "\n")
        count = plural(len(policy_set.issues), "error")
        say(f"{count} in {settings.policies_dir}: not reloading; the daemon keeps the policies it runs")
        return 1
    try:
        target = read_pid_file(pid_file_path(settings.state_file)) if pid is None else pid
        signal_daemon(target, signal.SIGHUP, settings.proc_root)
    except PidFileError as exc:
        say(str(exc))
        return 1
    return 0
