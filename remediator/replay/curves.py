"""The recorded stall totals as functions of time, for reads and triggers between samples.

A trace holds the ``total`` counters of memory.pressure at the times they
were read. Stall accrues continuously in between, so the value a read at
time ``t`` would have seen is taken on the line between the samples around
``t`` (held after the last one), with one refinement where a stall starts or
stops: an interval that follows a still counter and precedes a steeper one is
where a stall *began*, so it is taken to have begun at the rate it went on at
(still, then rising, to the next sample); symmetrically an interval after a
steeper one and before a still counter is where it *ended*. Spreading the
first milliseconds of an episode over the whole second before it would start
the kernel's trigger polling (``remediator.replay.triggers``) up to a second
early, and the last ones would keep it seeing new stall after the stall
stopped. A cgroup that was removed and made again is a new incarnation: no
line joins two incarnations (the kernel's counter of the new cgroup starts
at 0).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from remediator.readings import Pressure

# (cgroup or None for the node, "some" | "full")
CurveKey = Tuple[Optional[str], str]


@dataclass
class Curve:
    """One stall counter: sample times, values and the incarnation each belongs to."""

    times: List[float] = field(default_factory=list)
    values: List[int] = field(default_factory=list)
    incarnations: List[int] = field(default_factory=list)

    def add(self, t: float, value: int, incarnation: int) -> None:
        self.times.append(t)
        self.values.append(value)
        self.incarnations.append(incarnation)

    def at(self, t: float, incarnation: int) -> Optional[float]:
        """The counter at ``t`` in ``incarnation``; None before its first sample."""
        i = bisect.bisect_right(self.times, t) - 1
        while i >= 0 and self.incarnations[i] > incarnation:
            i -= 1
        if i < 0 or self.incarnations[i] != incarnation:
            return None
        value = float(self.values[i])
        if self._joined(i):
            rise_start, rise_end = self._rise(i)
            if t >= rise_end:
                return float(self.values[i + 1])
            if t > rise_start:
                value += (t - rise_start) / (rise_end - rise_start) * (self.values[i + 1] - self.values[i])
        return value

    def _joined(self, i: int) -> bool:
        """Samples i and i + 1 belong to one incarnation, in time order."""
        return (
            i + 1 < len(self.times)
            and self.incarnations[i + 1] == self.incarnations[i]
            and self.times[i + 1] > self.times[i]
        )

    def _slope(self, i: int) -> Optional[float]:
        """The counter's growth per second from sample i to i + 1; None where no line joins them."""
        if i < 0 or not self._joined(i):
            return None
        return (self.values[i + 1] - self.values[i]) / (self.times[i + 1] - self.times[i])

    def _rise(self, i: int) -> Tuple[float, float]:
        """When, between samples i and i + 1, the counter grew (see the module docstring)."""
        start, end = self.times[i], self.times[i + 1]
        grown = self.values[i + 1] - self.values[i]
        slope, before, after = self._slope(i), self._slope(i - 1), self._slope(i + 1)
        if grown <= 0 or slope is None:
            return start, end
        began = before == 0 and after is not None and after > slope
        ended = after == 0 and before is not None and before > slope
        if began:
            assert after is not None
            return max(start, end - grown / after), end
        if ended:
            assert before is not None
            return start, min(end, start + grown / before)
        return start, end

    def next_rise(self, after: float, incarnation: int) -> Optional[float]:
        """The first time at or after ``after`` when the counter of ``incarnation`` grows."""
        k = max(bisect.bisect_right(self.times, after) - 1, 0)
        for i in range(k, len(self.times) - 1):
            if self.incarnations[i] != incarnation or not self._joined(i):
                continue
            rise_start, rise_end = self._rise(i)
            if self.values[i + 1] > self.values[i] and rise_end > after:
                return max(after, rise_start)
        return None

    def last_time(self, incarnation: int) -> Optional[float]:
        for k in range(len(self.times) - 1, -1, -1):
            if self.incarnations[k] == incarnation:
                return self.times[k]
        return None


@dataclass
class StallCurves:
    """Every recorded stall counter of a trace, with the incarnation of each cgroup."""

    curves: Dict[CurveKey, Curve] = field(default_factory=dict)
    _incarnation: Dict[Optional[str], int] = field(default_factory=dict)
    _gone: Dict[Optional[str], bool] = field(default_factory=dict)

    def sample(self, t: float, cgroup: Optional[str], pressure: Pressure) -> int:
        """Add a read of ``cgroup`` (None: the node); returns its incarnation."""
        if self._gone.pop(cgroup, False) or cgroup not in self._incarnation:
            self._incarnation[cgroup] = self._incarnation.get(cgroup, -1) + 1
        incarnation = self._incarnation[cgroup]
        self.curves.setdefault((cgroup, "some"), Curve()).add(t, pressure.some.total_us, incarnation)
        if pressure.full is not None:
            self.curves.setdefault((cgroup, "full"), Curve()).add(t, pressure.full.total_us, incarnation)
        return incarnation

    def removed(self, cgroup: str) -> None:
        self._gone[cgroup] = True

    def curve(self, cgroup: Optional[str], kind: str) -> Optional[Curve]:
        return self.curves.get((cgroup, kind))


__all__ = ["Curve", "CurveKey", "StallCurves"]
