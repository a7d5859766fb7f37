"""sd_notify: readiness, status, reload, stop and watchdog for a Type=notify service.

Everything here is best effort and never raises: outside systemd (no
NOTIFY_SOCKET, or no systemd Python module) every call is a no-op, and a
failed send must not take down the daemon it reports on.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Optional

from remediator.daemon.journal import escape_text

# systemd.daemon.notify(state) -> bool; raises OSError on a socket error.
NotifySend = Callable[[str], object]


def _systemd_notify() -> Optional[NotifySend]:
    try:
        from systemd.daemon import notify
    except ImportError:
        return None
    send: NotifySend = notify
    return send


class Notifier:
    def __init__(
        self, environ: Optional[Mapping[str, str]] = None, send: Optional[NotifySend] = None
    ) -> None:
        # None: read os.environ at each call, which is where sd_notify itself looks.
        self._environ = environ
        self._send = send if send is not None else _systemd_notify()
        self.failed_sends = 0

    def _env(self) -> Mapping[str, str]:
        return self._environ if self._environ is not None else os.environ

    @property
    def enabled(self) -> bool:
        return self._send is not None and bool(self._env().get("NOTIFY_SOCKET"))

    def _notify(self, state: str) -> None:
        if self._send is None or not self._env().get("NOTIFY_SOCKET"):
            return
        try:
            self._send(state)
        except OSError:
            self.failed_sends += 1

    @staticmethod
    def _status_line(text: str) -> str:
        # The protocol is newline-separated KEY=VALUE: a newline in the status
        # (a cgroup name, say) would end it and start a bogus assignment.
        return "STATUS=" + escape_text(text)

    def ready(self, status: str) -> None:
        self._notify("READY=1\n" + self._status_line(status))

    def status(self, text: str) -> None:
        self._notify(self._status_line(text))

    def watchdog(self) -> None:
        self._notify("WATCHDOG=1")

    def reloading(self, monotonic_usec: int) -> None:
        # MONOTONIC_USEC (systemd 253+, Type=notify-reload) tells systemd which
        # READY=1 ends this reload; older versions ignore it.
        self._notify(f"RELOADING=1\nMONOTONIC_USEC={int(monotonic_usec)}")

    def stopping(self) -> None:
        self._notify("STOPPING=1")

    def watchdog_interval_sec(self) -> Optional[float]:
        """How often to send WATCHDOG=1: half of WatchdogSec=, as sd_watchdog_enabled(3) advises.

        None when the watchdog is off, or when WATCHDOG_PID names another
        process (the variable was inherited, not meant for us).
        """
        env = self._env()
        usec_text = env.get("WATCHDOG_USEC", "")
        if not usec_text.isdigit() or int(usec_text) <= 0:
            return None
        pid_text = env.get("WATCHDOG_PID")
        if pid_text is not None and pid_text != "" and pid_text != str(os.getpid()):
            return None
        return int(usec_text) / 2 / 1_000_000
