"""Arming PSI triggers: the exact bytes, refusal as TriggerRefused, the fd closed on every failure."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Iterator, List

import pytest

from remediator.errors import CgroupGone, KernelFileMissing, KernelOther, KernelTransient
from remediator.kernel.psi_trigger import (
    PsiTrigger,
    TriggerRefused,
    arm_trigger,
    check_trigger,
)
from tests.fakefs import QUIET_PRESSURE, FakeKernel

SPEC = PsiTrigger("some", 150_000, 1_000_000)


class FdLedger:
    """Records the fds os.open hands out and os.close takes back."""

    def __init__(self) -> None:
        self.opened: List[int] = []
        self.closed: List[int] = []

    @property
    def still_open(self) -> List[int]:
        return [fd for fd in self.opened if fd not in self.closed]


@pytest.fixture
def fds(monkeypatch: pytest.MonkeyPatch) -> Iterator[FdLedger]:
    ledger = FdLedger()
    real_open, real_close = os.open, os.close

    def recording_open(path: object, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)  # type: ignore[arg-type]
        ledger.opened.append(fd)
        return fd

    def recording_close(fd: int) -> None:
        ledger.closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "open", recording_open)
    monkeypatch.setattr(os, "close", recording_close)
    yield ledger
    for fd in ledger.still_open:
        real_close(fd)


def _write_fails_with(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def failing_write(fd: int, data: bytes) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", failing_write)


@pytest.fixture
def pressure_file(tmp_path: Path) -> Path:
    path = tmp_path / "memory.pressure"
    path.write_bytes(b"")
    return path


def test_arm_trigger_writes_the_spec_with_its_trailing_nul_and_returns_the_open_fd(
    pressure_file: Path, fds: FdLedger
) -> None:
    fd = arm_trigger(pressure_file, SPEC)
    assert fds.still_open == [fd]
    os.close(fd)
    assert pressure_file.read_bytes() == b"some 150000 1000000\0"


def test_arm_trigger_opens_read_write_nonblocking_close_on_exec(pressure_file: Path) -> None:
    fd = arm_trigger(pressure_file, PsiTrigger("full", 100_000, 2_000_000))
    try:
        flags = os.get_blocking(fd), os.get_inheritable(fd)
        assert flags == (False, False)
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(b"full 100000 2000000\0")
    finally:
        os.close(fd)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP])
def test_a_refused_write_raises_trigger_refused_with_errno_and_closes_the_fd(
    pressure_file: Path, fds: FdLedger, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    _write_fails_with(monkeypatch, code)
    with pytest.raises(TriggerRefused) as info:
        arm_trigger(pressure_file, SPEC)
    assert info.value.errno == code
    assert "some 150000 1000000" in info.value.message
    assert len(fds.opened) == 1
    assert fds.still_open == []


def test_ebusy_is_not_a_refusal_but_a_transient_error(
    pressure_file: Path, fds: FdLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fails_with(monkeypatch, errno.EBUSY)
    with pytest.raises(KernelTransient) as info:
        arm_trigger(pressure_file, SPEC)
    assert not isinstance(info.value, TriggerRefused)
    assert fds.still_open == []


def test_enodev_on_write_means_the_cgroup_is_gone(
    pressure_file: Path, fds: FdLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fails_with(monkeypatch, errno.ENODEV)
    with pytest.raises(CgroupGone):
        arm_trigger(pressure_file, SPEC, pressure_file.parent)
    assert fds.still_open == []


def test_a_short_write_is_an_error_and_closes_the_fd(
    pressure_file: Path, fds: FdLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "write", lambda fd, data: len(data) - 1)
    with pytest.raises(KernelOther, match="short write"):
        arm_trigger(pressure_file, SPEC)
    assert fds.still_open == []


def test_arming_in_a_removed_cgroup_is_cgroup_gone(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path)
    directory = kernel.add_cgroup("a.service")
    shutil.rmtree(directory)
    with pytest.raises(CgroupGone):
        arm_trigger(directory / "memory.pressure", SPEC, directory)


def test_arming_a_missing_pressure_file_is_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KernelFileMissing):
        arm_trigger(tmp_path / "memory.pressure", SPEC, tmp_path)


def test_check_trigger_reports_a_missing_file_without_raising(tmp_path: Path) -> None:
    check = check_trigger(tmp_path / "pressure" / "memory", SPEC)
    assert not check.accepted
    assert check.errno == errno.ENOENT
    assert "could not be armed" in check.reason


def test_arming_on_a_fake_tree_file_overwrites_it_which_is_why_the_probe_does_not(tmp_path: Path) -> None:
    # Documents the hazard capabilities.probe guards against.
    kernel = FakeKernel(tmp_path)
    path = kernel.proc_root / "pressure" / "memory"
    os.close(arm_trigger(path, SPEC))
    assert path.read_text() != QUIET_PRESSURE
