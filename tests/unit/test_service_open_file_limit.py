"""The daemon raises its soft open-file limit: one fd per armed trigger, thousands of cgroups.

With the usual soft limit of 1024, 2000 watched cgroups ran out of fds while
arming and every read failed with EMFILE after that (bench/cost, N = 2000).
"""

from __future__ import annotations

import resource
from typing import List, Tuple

import pytest

from remediator.daemon import run as service


def _fake_limits(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, refuse: bool = False
) -> List[Tuple[int, int]]:
    calls: List[Tuple[int, int]] = []

    def getrlimit(which: int) -> Tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return soft, hard

    def setrlimit(which: int, limits: Tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if refuse:
            raise ValueError("not allowed")
        calls.append(limits)

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return calls


def test_soft_limit_is_raised_to_the_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_limits(monkeypatch, 1024, 524288)

    assert service.raise_open_file_limit() == (524288, 524288)
    assert calls == [(524288, 524288)]


def test_a_soft_limit_already_at_the_hard_limit_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_limits(monkeypatch, 4096, 4096)

    assert service.raise_open_file_limit() == (4096, 4096)
    assert calls == []


def test_a_refused_raise_keeps_the_daemon_going_with_the_limit_it_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_limits(monkeypatch, 1024, 524288, refuse=True)

    assert service.raise_open_file_limit() == (1024, 524288)
