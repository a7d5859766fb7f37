"""The recorded stall totals as functions of time, for reads and triggers between samples.

A trace holds the ``total`` counters of memory.pressure at the times they
were read. Stall accrues continuously in between, so the value a read at
time ``t`` would have seen is taken on the straight line between the samples
around ``t`` (held after the last one). A cgroup that was removed and made
again is a new incarnation: no line joins two incarnations (the kernel's
counter of the new cgroup starts at 0).
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
        j = i + 1
        if j < len(self.times) and self.incarnations[j] == incarnation and self.times[j] > self.times[i]:
            share = (t - self.times[i]) / (self.times[j] - self.times[i])
            value += share * (self.values[j] - self.values[i])
        return value

    def breakpoints(self, start: float, end: float, incarnation: int) -> List[float]:
        """Sample times of ``incarnation`` in (start, end]."""
        lo = bisect.bisect_right(self.times, start)
        hi = bisect.bisect_right(self.times, end)
        return [self.times[k] for k in range(lo, hi) if self.incarnations[k] == incarnation]

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
