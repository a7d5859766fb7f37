"""sd_notify through the real systemd.daemon.notify, to a datagram socket in tmp_path."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from remediator.daemon.notify import Notifier

# sockaddr_un's sun_path holds 108 bytes including the NUL.
_MAX_SOCKET_PATH = 107


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    if len(str(path)) > _MAX_SOCKET_PATH:
        pytest.skip(f"tmp_path too long for an AF_UNIX socket: {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    # sd_notify(3) reads the variable from the environment, as under systemd.
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> List[str]:
    """Every datagram waiting on the socket, decoded."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return out


def test_ready_sends_ready_and_status(notify_socket: socket.socket) -> None:
    Notifier().ready("enforcing: 2 policies")
    assert received(notify_socket) == ["READY=1\nSTATUS=enforcing: 2 policies"]


def test_status_sends_only_status(notify_socket: socket.socket) -> None:
    Notifier().status("watching 3 targets")
    assert received(notify_socket) == ["STATUS=watching 3 targets"]


def test_watchdog_sends_watchdog(notify_socket: socket.socket) -> None:
    Notifier().watchdog()
    assert received(notify_socket) == ["WATCHDOG=1"]


def test_reloading_sends_reloading_with_the_monotonic_timestamp(notify_socket: socket.socket) -> None:
    Notifier().reloading(123456789)
    assert received(notify_socket) == ["RELOADING=1\nMONOTONIC_USEC=123456789"]


def test_stopping_sends_stopping(notify_socket: socket.socket) -> None:
    Notifier().stopping()
    assert received(notify_socket) == ["STOPPING=1"]


def test_a_newline_in_the_status_cannot_inject_an_assignment(notify_socket: socket.socket) -> None:
    Notifier().status("cgroup evil\nREADY=1")
    assert received(notify_socket) == ["STATUS=cgroup evil\\nREADY=1"]


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sent: List[str] = []
    notifier = Notifier(send=sent.append)
    notifier.ready("x")
    notifier.watchdog()
    notifier.stopping()
    assert sent == []
    assert not notifier.enabled


def test_a_vanished_socket_is_counted_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notifier = Notifier()
    notifier.watchdog()
    assert notifier.failed_sends == 1


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_when_meant_for_us(
    env: Dict[str, str], interval: Optional[float]
) -> None:
    assert Notifier(environ=env, send=lambda _state: None).watchdog_interval_sec() == interval
