"""The timing fields of a look's records: where the daemon's reaction time goes."""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional, Sequence

from remediator.records import Record

# Extra fields on the records of an observation made in the loop (a trigger
# event or a timed look, such as the re-check after an unconfirmed event), in
# microseconds of the monotonic clock (CLOCK_MONOTONIC, comparable with other
# processes on the host): when the loop woke, when the core had decided, and
# (on each action's record) when the executor had finished the write. They
# show where reaction time goes, whichever look acted.
WOKEN_FIELD = "WOKEN_MONOTONIC_US"
DECIDED_FIELD = "DECIDED_MONOTONIC_US"
WRITTEN_FIELD = "WRITTEN_MONOTONIC_US"


def monotonic_us(seconds: float) -> str:
    return str(int(seconds * 1_000_000))


def with_timing(records: Sequence[Record], timing: Optional[Dict[str, str]]) -> Sequence[Record]:
    if not timing:
        return records
    return [replace(r, extra={**r.extra, **timing}) for r in records]


__all__ = ["DECIDED_FIELD", "WOKEN_FIELD", "WRITTEN_FIELD", "monotonic_us", "with_timing"]
