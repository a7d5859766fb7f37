"""The daemon's PID file, and how ``remediator reload`` knows a PID is the daemon.

The file is ``remediator.pid`` in the state file's directory (private: 0700,
root's). It is written by the daemon at start and read by ``remediator
reload`` when no ``--pid`` is given.

Writing: never through a link someone planted (root writing its PID through
``remediator.tmp -> /etc/...``): a fresh temporary file is created
exclusively with ``O_NOFOLLOW``, then renamed over the name (a rename
replaces a link itself, it does not follow it).

Knowing the daemon: a PID is signalled only when ``/proc/PID`` shows the
daemon's own ``run``: the executable is a Python interpreter and the
arguments are the remediator program (``/usr/bin/remediator``, a venv's
``bin/remediator`` or ``-m remediator``) with the ``run`` command. That holds
for the PID in the PID file too, so a stale file whose number was reused by
another process is refused, and so is ``--pid`` of, say, ``journalctl -u
remediator -f`` (the old test, "remediator" anywhere in the command line,
took it).
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import re
import stat
from pathlib import Path
from typing import List, Optional, Sequence

from remediator.errors import RemediatorError

PID_FILE_NAME = "remediator.pid"
# "4194304\n" is the largest PID Linux hands out (PID_MAX_LIMIT); anything longer is not ours.
MAX_PID_FILE_BYTES = 64
PROGRAM_NAME = "remediator"

# The options that come before the command and take a value (remediator.cli's global options).
_GLOBAL_OPTIONS_WITH_VALUE = frozenset({"--config", "--policies", "--cgroup-root", "--proc-root"})
# CPython options that take the next argument as their value.
_PYTHON_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "--check-hash-based-pycs"})
_PYTHON_EXECUTABLE = re.compile(r"python[0-9.]*\Z")
_DELETED = " (deleted)"  # readlink of /proc/PID/exe after the interpreter was upgraded in place


class PidFileError(RemediatorError):
    """The PID file cannot be written or read, or does not hold a PID."""


def pid_file_path(state_file: Path) -> Path:
    """Where the daemon whose state file is ``state_file`` keeps its PID."""
    return state_file.parent / PID_FILE_NAME


def write_pid_file(path: Path, pid: Optional[int] = None) -> Path:
    """Write ``pid`` (default: ours) to ``path`` atomically; raises ``PidFileError``.

    The directory is created 0700 when missing. The temporary file
    ``<name>.tmp`` is removed first (a leftover or a planted link), then
    created with ``O_EXCL | O_NOFOLLOW`` and renamed over ``path``.
    """
    value = os.getpid() if pid is None else pid
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(tmp, flags, 0o644), "w") as out:
            out.write(f"{value}\n")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PidFileError(f"cannot write the PID file {path}: {exc.strerror or exc}") from exc
    return path


def read_pid_file(path: Path) -> int:
    """The PID in ``path``; raises ``PidFileError`` naming the file and what is wrong with it.

    Opened without following a link and without blocking on a FIFO; only a
    small regular file holding one decimal number above 1 is a PID file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno_mod.ELOOP:
            raise PidFileError(f"{path} is a symlink, not the daemon's PID file") from exc
        raise PidFileError(f"cannot read the daemon's PID from {path}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PidFileError(f"{path} is not a regular file")
        data = os.read(fd, MAX_PID_FILE_BYTES + 1)
    except OSError as exc:
        raise PidFileError(f"cannot read the daemon's PID from {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    text = data.decode("ascii", errors="replace").strip()
    if len(data) > MAX_PID_FILE_BYTES or not text.isdigit() or not text.isascii():
        raise PidFileError(f"{path} does not hold a PID")
    pid = int(text)
    if pid <= 1:
        raise PidFileError(f"{path} holds PID {pid}, which is never the daemon")
    return pid


def remove_pid_file(path: Path, pid: Optional[int] = None) -> bool:
    """Remove ``path`` if it still holds ``pid`` (default: ours); whether it was removed.

    A daemon that stops must not remove the file a newer daemon has written since.
    """
    value = os.getpid() if pid is None else pid
    try:
        if read_pid_file(path) != value:
            return False
        path.unlink()
    except (PidFileError, OSError):
        return False
    return True


def remediator_arguments(argv: Sequence[str]) -> Optional[List[str]]:
    """The arguments given to the remediator program by a Python command line, or None.

    ``["/usr/bin/python3", "-IB", "/usr/bin/remediator", "run"]`` -> ``["run"]``;
    ``["python", "-m", "remediator", "--config", "x", "run"]`` -> ``["--config", "x", "run"]``.
    """
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            module = argv[i + 1] if arg == "-m" and i + 1 < len(argv) else arg[2:]
            rest = argv[i + 2 :] if arg == "-m" else argv[i + 1 :]
            return list(rest) if module == PROGRAM_NAME else None
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg == "--":
            i += 1
            break
        if arg.startswith("-"):
            if arg.startswith("-c") or (not arg.startswith("--") and "c" in arg[1:]):
                return None  # -c COMMAND: whatever it is, it is not the installed program
            i += 1
            continue
        break
    if i >= len(argv) or os.path.basename(argv[i]) != PROGRAM_NAME:
        return None
    return list(argv[i + 1 :])


def command_of(arguments: Sequence[str]) -> Optional[str]:
    """The remediator command in ``arguments`` (``run``, ``reload``, ...), after the global options."""
    i = 0
    while i < len(arguments):
        arg = arguments[i]
        if arg in _GLOBAL_OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1  # --config=FILE, --version, ...
            continue
        return arg
    return None


def daemon_problem(pid: int, proc_root: Path) -> Optional[str]:
    """None when process ``pid`` is remediator's ``run``; otherwise why it is not (one clause)."""
    if pid <= 1:
        return f"PID {pid} is never the daemon"
    proc = proc_root / str(pid)
    try:
        raw = (proc / "cmdline").read_bytes()
        exe = os.readlink(proc / "exe")
    except FileNotFoundError:
        return f"no process has PID {pid}"
    except OSError as exc:
        return f"cannot tell what PID {pid} is ({exc.strerror or exc})"
    argv = [os.fsdecode(part) for part in raw.split(b"\0")[:-1]] if raw.endswith(b"\0") else []
    if exe.endswith(_DELETED):
        exe = exe[: -len(_DELETED)]
    if not argv or _PYTHON_EXECUTABLE.match(os.path.basename(exe)) is None:
        return f"PID {pid} is not a remediator daemon (executable {exe})"
    arguments = remediator_arguments(argv)
    if arguments is None or command_of(arguments) != "run":
        return f"PID {pid} is not a remediator daemon (its command line is not `remediator run`)"
    return None


def signal_daemon(pid: int, signum: int, proc_root: Path) -> None:
    """Send ``signum`` to ``pid`` once it is known to be remediator's ``run``; raises ``PidFileError``.

    Where the kernel has pidfds (5.3+), the process is pinned before it is
    examined and signalled through the pin, so a PID that is reused between
    the look and the signal cannot receive it.
    """
    pidfd: Optional[int] = None
    with contextlib.suppress(AttributeError, OSError):  # no pidfd_open (old Python, old kernel, seccomp)
        pidfd = os.pidfd_open(pid)
    try:
        problem = daemon_problem(pid, proc_root)
        if problem is not None:
            raise PidFileError(problem)
        try:
            if pidfd is not None:
                import signal

                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(pid, signum)
        except OSError as exc:
            raise PidFileError(f"cannot signal PID {pid}: {exc.strerror or exc}") from exc
    finally:
        if pidfd is not None:
            os.close(pidfd)


__all__ = [
    "PID_FILE_NAME",
    "PidFileError",
    "command_of",
    "daemon_problem",
    "pid_file_path",
    "read_pid_file",
    "remediator_arguments",
    "remove_pid_file",
    "signal_daemon",
    "write_pid_file",
]
