"""Fixtures for real-kernel tests: session-scoped builders of the two VM shapes.

`vm_light` and `vm_full` build (or find in the cache) what their shape needs
once per session. When that is impossible here, the test is skipped with the
reason; under CI (CI=true) it fails instead, because CI must really run these.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from tests.vm import harness


def fail_or_skip_unavailable(exc: harness.VmUnavailable) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"VM unavailable under CI: {exc.reason}", pytrace=False)
    pytest.skip(f"VM unavailable: {exc.reason}")


@pytest.fixture(scope="session")
def vm_light() -> harness.LightVm:
    try:
        return harness.LightVm(harness.ensure_light())
    except harness.VmUnavailable as exc:
        fail_or_skip_unavailable(exc)


@pytest.fixture(scope="session")
def vm_full() -> harness.FullVm:
    try:
        return harness.FullVm(harness.ensure_light(), harness.ensure_full_image())
    except harness.VmUnavailable as exc:
        fail_or_skip_unavailable(exc)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.TIMINGS:
        return
    terminalreporter.section("VM timings")
    for timing in harness.TIMINGS:
        terminalreporter.write_line(f"{timing.seconds:7.1f}s  {timing.label}")
