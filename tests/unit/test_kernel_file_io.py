"""read_text: one open and one read on the hot path, OSError as domain errors; parse_uint's strictness."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from pathlib import Path
from typing import Callable, List, Tuple, Type

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.cli import main
from remediator.errors import (
    CgroupGone,
    KernelError,
    KernelFileMissing,
    KernelFileNotRegular,
    KernelParseError,
    KernelPermissionDenied,
    KernelTransient,
)
from remediator.kernel.file_io import parse_uint, read_text
from tests.fakefs import FakeKernel


def test_read_text_returns_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "memory.stat"
    path.write_text("anon 1\nfile 2\n")
    assert read_text(path) == "anon 1\nfile 2\n"


def test_read_text_reads_a_small_file_with_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "memory.current"
    path.write_text("4294836224\n")
    reads: List[int] = []
    real_read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        reads.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", counting_read)
    assert read_text(path) == "4294836224\n"
    assert len(reads) == 1


def test_read_text_keeps_reading_when_a_file_fills_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "mounts"
    content = "".join(f"cgroup2 /sys/fs/cgroup/{i} cgroup2 rw 0 0\n" for i in range(8000))
    assert len(content) > 128 * 1024
    path.write_text(content)
    assert read_text(path) == content


def test_read_text_closes_the_fd_when_the_read_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "memory.pressure"
    path.write_text("x")
    closed: List[int] = []
    real_close = os.close

    def failing_read(fd: int, size: int) -> bytes:
        raise OSError(errno.ENODEV, "No such device")

    def recording_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "read", failing_read)
    monkeypatch.setattr(os, "close", recording_close)
    with pytest.raises(CgroupGone):
        read_text(path, tmp_path)
    assert len(closed) == 1


def test_missing_file_in_an_existing_cgroup_is_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KernelFileMissing):
        read_text(tmp_path / "memory.reclaim", tmp_path)


def test_missing_file_in_a_removed_cgroup_is_cgroup_gone(tmp_path: Path) -> None:
    cgroup_dir = tmp_path / "gone.scope"
    cgroup_dir.mkdir()
    (cgroup_dir / "memory.current").write_text("0\n")
    shutil.rmtree(cgroup_dir)
    with pytest.raises(CgroupGone):
        read_text(cgroup_dir / "memory.current", cgroup_dir)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EACCES, KernelPermissionDenied),
        (errno.EPERM, KernelPermissionDenied),
        (errno.EAGAIN, KernelTransient),
    ],
)
def test_open_errors_become_domain_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, expected: Type[KernelError]
) -> None:
    def failing_open(path: object, flags: int, mode: int = 0o777) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(expected) as info:
        read_text(tmp_path / "memory.high")
    assert info.value.path == tmp_path / "memory.high"


@pytest.mark.parametrize("token", ["0", "7", "18446744073709551615", "0007"])
def test_parse_uint_accepts_what_the_kernel_prints(token: str) -> None:
    assert parse_uint(token, "src", "value") == int(token)


@pytest.mark.parametrize("token", ["", "+5", "-5", "1_000", " 7", "7 ", "0x1f", "1.0", "\u0661\u0662", "max"])
def test_parse_uint_refuses_what_int_would_accept_but_the_kernel_never_prints(token: str) -> None:
    with pytest.raises(KernelParseError, match="src"):
        parse_uint(token, "src", "value")


@given(st.text())
def test_parse_uint_raises_nothing_but_parse_errors(token: str) -> None:
    with contextlib.suppress(KernelParseError):
        parse_uint(token, "fuzz", "value")


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_parse_uint_round_trips(value: int) -> None:
    assert parse_uint(str(value), "src", "value") == value


# ---- issue 12, item 7: what is not a regular file is refused, without blocking ---------------------


def _in_a_thread(call: Callable[[], object]) -> Tuple[bool, List[BaseException]]:
    """Run ``call`` in a thread: (still blocked after 5 s, what it raised)."""
    raised: List[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=5)
    return thread.is_alive(), raised


def test_a_fifo_in_place_of_memory_stat_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "memory.stat"
    os.mkfifo(fifo)

    blocked, raised = _in_a_thread(lambda: read_text(fifo))
    if blocked:
        # The blocking open waits for a writer: be one, so the thread ends, then fail.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked (the open waits for a writer)")

    (error,) = raised
    assert isinstance(error, KernelFileNotRegular)
    assert isinstance(error, KernelError)
    assert error.path == fifo
    assert str(error) == f"{fifo}: is a FIFO, not a regular file: kernel interface files are regular files"


def test_a_symlink_to_a_device_is_refused_before_any_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /dev/zero never ends: read as a file it would fill memory 64 KiB at a time.
    link = tmp_path / "memory.current"
    link.symlink_to("/dev/zero")
    monkeypatch.setattr(os, "read", lambda fd, size: pytest.fail("read a device"))

    with pytest.raises(KernelFileNotRegular, match="is a character device, not a regular file"):
        read_text(link)


def test_a_directory_in_place_of_a_file_is_refused_as_not_regular(tmp_path: Path) -> None:
    (tmp_path / "memory.high").mkdir()

    with pytest.raises(KernelFileNotRegular, match="is a directory"):
        read_text(tmp_path / "memory.high", cgroup_dir=tmp_path)


def test_a_refused_file_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "memory.events"
    os.mkfifo(fifo)
    closed: List[int] = []
    real_close = os.close

    def recording_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "close", recording_close)

    with pytest.raises(KernelFileNotRegular):
        read_text(fifo)
    assert len(closed) == 1


def test_status_all_on_a_tree_with_a_fifo_memory_stat_ends_and_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The probe: this hung `status --all` (and the daemon) at the open.
    kernel = FakeKernel(tmp_path)
    kernel.add_seed("system.slice/seed.service")
    kernel.add_cgroup("system.slice/fifo.service", current=1 << 20)
    fifo = kernel.cgroup_root / "system.slice" / "fifo.service" / "memory.stat"
    fifo.unlink()
    os.mkfifo(fifo)
    (tmp_path / "none.yaml").write_text("{}\n")
    argv = ["--cgroup-root", str(kernel.cgroup_root), "--proc-root", str(kernel.proc_root),
            "--policies", str(tmp_path / "no-policies"), "--config", str(tmp_path / "none.yaml"),
            "status", "--all"]  # fmt: skip
    codes: List[int] = []

    blocked, raised = _in_a_thread(lambda: codes.append(main(argv)))
    if blocked:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("status --all blocked on the FIFO")

    assert (raised, codes) == ([], [0])
    captured = capsys.readouterr()
    assert "system.slice/seed.service" in captured.out
    assert f"{fifo}: is a FIFO, not a regular file" in captured.err
