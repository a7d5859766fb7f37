"""The injected clock.

Nothing outside this module calls ``time`` directly: the decision core gets
``now`` as an argument and the daemon gets a ``Clock``, so durations,
cooldowns and hysteresis are tested with a fake clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (durations, cooldowns)."""

    def wall(self) -> float:
        """Seconds since the epoch (only for records shown to people)."""

    @property
    def passes_while_waiting(self) -> bool:
        """Whether this clock moves while the process blocks in poll(): a simulated
        clock does not, so waiting for a deadline on it would block for ever."""


class SystemClock:
    passes_while_waiting = True

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to; for tests and replays."""

    passes_while_waiting = False

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_offset + self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now += seconds
