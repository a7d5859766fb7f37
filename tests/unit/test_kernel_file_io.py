"""read_text: one open and one read on the hot path, OSError as domain errors; parse_uint's strictness."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import List, Type

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.errors import (
    CgroupGone,
    KernelError,
    KernelFileMissing,
    KernelOther,
    KernelParseError,
    KernelPermissionDenied,
    KernelTransient,
)
from remediator.kernel.file_io import parse_uint, read_text


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


def test_reading_a_directory_is_kernel_other(tmp_path: Path) -> None:
    with pytest.raises(KernelOther) as info:
        read_text(tmp_path)
    assert info.value.errno == errno.EISDIR


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
