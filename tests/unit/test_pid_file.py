"""The PID file, and knowing the daemon by its /proc entry (issue 12 item 15; issue 11 item 6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from remediator.daemon.pid_file import (
    PidFileError,
    daemon_problem,
    pid_file_path,
    read_pid_file,
    remediator_arguments,
    remove_pid_file,
    signal_daemon,
    write_pid_file,
)


def private_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    return directory


# ---- writing and reading ----------------------------------------------------------------------


def test_the_pid_file_sits_beside_the_state_file() -> None:
    assert pid_file_path(Path("/run/remediator/state.json")) == Path("/run/remediator/remediator.pid")


def test_pid_file_is_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    directory = private_dir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (directory / "remediator.tmp").symlink_to(victim)
    (directory / "remediator.pid").symlink_to(victim)

    written = write_pid_file(directory / "remediator.pid")

    assert victim.read_text() == "precious\n"
    assert not written.is_symlink()
    assert read_pid_file(written) == os.getpid()


def test_an_unwritable_pid_file_is_a_domain_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PidFileError, match="cannot write the PID file"):
        write_pid_file(blocker / "remediator.pid")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "does not hold a PID"),
        ("12x\n", "does not hold a PID"),
        ("-5\n", "does not hold a PID"),
        ("1\n", "holds PID 1, which is never the daemon"),
        ("9" * 100, "does not hold a PID"),
        ("\u0663\n", "does not hold a PID"),  # a non-ASCII digit int() would take
    ],
)
def test_a_pid_file_that_does_not_hold_a_pid_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = private_dir(tmp_path) / "remediator.pid"
    path.write_text(content)
    with pytest.raises(PidFileError, match=message):
        read_pid_file(path)


def test_a_symlinked_or_fifo_pid_file_is_refused_without_blocking(tmp_path: Path) -> None:
    directory = private_dir(tmp_path)
    (tmp_path / "elsewhere").write_text("1234\n")
    (directory / "link.pid").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(directory / "fifo.pid")
    with pytest.raises(PidFileError, match="is a symlink"):
        read_pid_file(directory / "link.pid")
    with pytest.raises(PidFileError, match="is not a regular file"):
        read_pid_file(directory / "fifo.pid")


def test_a_stopping_daemon_removes_only_its_own_pid_file(tmp_path: Path) -> None:
    path = write_pid_file(private_dir(tmp_path) / "remediator.pid", pid=4242)
    assert not remove_pid_file(path) and path.exists()  # a newer daemon's file
    assert remove_pid_file(path, pid=4242) and not path.exists()


# ---- which command lines are the daemon's run ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "arguments"),
    [
        (["/usr/bin/python3", "-IB", "/usr/bin/remediator", "run"], ["run"]),
        (["/srv/.venv/bin/python", "/srv/.venv/bin/remediator", "run", "--enforce"], ["run", "--enforce"]),
        (["python3", "-m", "remediator", "--config", "/x.yaml", "run"], ["--config", "/x.yaml", "run"]),
        (["python3", "-X", "dev", "-mremediator", "run"], ["run"]),
        (["python3", "-c", "import remediator", "remediator", "run"], None),
        (["python3", "-m", "remediator_other", "run"], None),
        (["python3", "/usr/bin/not-remediator", "run"], None),
        (["python3"], None),
    ],
)
def test_remediator_arguments_are_found_behind_the_interpreter(
    argv: List[str], arguments: Optional[List[str]]
) -> None:
    assert remediator_arguments(argv) == arguments


def fake_process(proc_root: Path, pid: int, exe: str, argv: List[str]) -> None:
    entry = proc_root / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"".join(os.fsencode(a) + b"\0" for a in argv))
    (entry / "exe").symlink_to(exe)


@pytest.mark.parametrize(
    ("exe", "argv", "problem"),
    [
        ("/usr/bin/python3.11", ["/usr/bin/python3", "-IB", "/usr/bin/remediator", "run"], None),
        ("/usr/bin/python3.11 (deleted)", ["/usr/bin/python3", "/usr/bin/remediator", "run"], None),
        (
            "/usr/bin/journalctl",
            ["journalctl", "-u", "remediator", "-f"],
            "PID 4242 is not a remediator daemon (executable /usr/bin/journalctl)",
        ),
        (
            "/usr/bin/python3.11",
            ["/usr/bin/python3", "/usr/bin/remediator", "reload", "--pid", "4242"],
            "PID 4242 is not a remediator daemon (its command line is not `remediator run`)",
        ),
        (
            "/usr/bin/python3.11",
            ["/usr/bin/python3", "/home/x/remediator-notes.py", "run"],
            "PID 4242 is not a remediator daemon (its command line is not `remediator run`)",
        ),
    ],
)
def test_only_remediator_run_is_taken_for_the_daemon(
    tmp_path: Path, exe: str, argv: List[str], problem: Optional[str]
) -> None:
    fake_process(tmp_path, 4242, exe, argv)
    assert daemon_problem(4242, tmp_path) == problem


def test_a_pid_without_a_process_is_not_the_daemon(tmp_path: Path) -> None:
    assert daemon_problem(4242, tmp_path) == "no process has PID 4242"
    assert daemon_problem(1, tmp_path) == "PID 1 is never the daemon"


# ---- signalling real processes ---------------------------------------------------------------

# A stand-in daemon: a script called "remediator" run by Python with the `run` command; it says
# "ready" once its SIGHUP handler is in place and writes "hup" when the signal arrives.
_STAND_IN = """
import signal, sys, time
signal.signal(signal.SIGHUP, lambda *_: (sys.stdout.write("hup\\n"), sys.stdout.flush()))
sys.stdout.write("ready\\n"); sys.stdout.flush()
time.sleep(60)
"""


@pytest.fixture
def stand_in_daemon(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "bin" / "remediator"
    script.parent.mkdir()
    script.write_text(_STAND_IN)
    proc = subprocess.Popen([sys.executable, str(script), "run"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_the_daemon_is_signalled(stand_in_daemon: subprocess.Popen[str]) -> None:
    signal_daemon(stand_in_daemon.pid, signal.SIGHUP, Path("/proc"))
    assert stand_in_daemon.stdout is not None and stand_in_daemon.stdout.readline() == "hup\n"


def wait_for_exec(pid: int, word: bytes) -> None:
    """Until /proc shows the new program's command line, not the forked parent's."""
    deadline = time.monotonic() + 30
    while word not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the child never showed its command line"
        time.sleep(0.01)


def test_a_process_that_only_mentions_remediator_is_not_signalled() -> None:
    # The case: `journalctl -u remediator -f` was SIGHUP'd (and SIGHUP ends it).
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-u", "remediator", "-f"]
    )
    try:
        wait_for_exec(bystander.pid, b"remediator")
        with pytest.raises(PidFileError, match="is not a remediator daemon"):
            signal_daemon(bystander.pid, signal.SIGHUP, Path("/proc"))
        assert bystander.poll() is None, "the bystander was signalled"
    finally:
        bystander.kill()
        bystander.wait()
