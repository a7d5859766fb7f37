"""Hand-made traces for replay tests: a seed-like cgroup whose stall is scripted second by second."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from remediator.readings import CgroupSnapshot, MemoryEvents, MemoryStat, NodeSnapshot, Pressure, PressureLine
from remediator.trace.format import (
    EndReason,
    NodeWatchMode,
    PolicyDigest,
    TraceCapabilities,
    TraceHeader,
    TraceSource,
)
from remediator.trace.writer import TraceWriter

SEED = "system.slice/seed.service"
GIB = 1 << 30
MIB = 1 << 20
START = 7000.0


def header(interval: float = 1.0, triggers: Optional[bool] = True, reclaim: bool = True) -> TraceHeader:
    return TraceHeader(
        node="replay-test",
        kernel_release="6.1.0-test-amd64",
        capabilities=TraceCapabilities(
            memory_reclaim=reclaim,
            watch_mode=NodeWatchMode.TRIGGERS if triggers is not False else NodeWatchMode.SAMPLING,
            triggers_accepted=triggers,
            short_window_triggers=triggers,
            summary=("Kernel 6.1.0-test-amd64.",),
        ),
        policies=(PolicyDigest("services-cache.yaml", "00" * 32),),
        start_wall=1_780_000_000.0,
        start_monotonic=START,
        source=TraceSource.RECORD,
        interval_sec=interval,
        remediator_version="test",
    )


def _line(avg10: float, total: int) -> PressureLine:
    return PressureLine(avg10, avg10 / 2, avg10 / 4, total)


@dataclass
class SeedScript:
    """A 1 GiB service at its limit, most of it clean page cache; ``stall[k]`` is the full stall
    (ms) in second k, ``events_high[k]`` how many memory.high events second k adds."""

    stall_ms: Sequence[int]
    events_high: Dict[int, int] = field(default_factory=dict)
    high: Dict[int, Optional[int]] = field(default_factory=dict)  # second -> memory.high from then on
    gone_at: Optional[int] = None
    cgroup: str = SEED
    current: int = 1000 * MIB
    max_bytes: int = GIB
    file_bytes: int = 700 * MIB
    anon_bytes: int = 250 * MIB


def node_snapshot() -> NodeSnapshot:
    quiet = Pressure(_line(0.0, 0), _line(0.0, 0))
    return NodeSnapshot(quiet, 16 * GIB, 8 * GIB, 0, 0, 200 * MIB, 100)


def cgroup_snapshot(
    script: SeedScript, total_us: int, events_high: int, high: Optional[int]
) -> CgroupSnapshot:
    avg10 = 0.0 if total_us == 0 else 12.5
    return CgroupSnapshot(
        cgroup=script.cgroup,
        current_bytes=script.current,
        max_bytes=script.max_bytes,
        high_bytes=high,
        min_bytes=0,
        low_bytes=0,
        swap_max_bytes=None,
        stat=MemoryStat(
            {
                "anon": script.anon_bytes,
                "file": script.file_bytes,
                "active_file": script.file_bytes // 2,
                "inactive_file": script.file_bytes // 2,
                "shmem": 0,
                "file_dirty": 0,
                "file_writeback": 0,
                "kernel": 20 * MIB,
                "kernel_stack": MIB,
                "slab": 10 * MIB,
                "sock": 0,
                "file_mapped": 10 * MIB,
            }
        ),
        events=MemoryEvents(high=events_high, max=3),
        pressure=Pressure(_line(avg10, total_us * 2), _line(avg10, total_us)),
        events_local=MemoryEvents(high=events_high, max=3),
    )


def write_trace(path: Path, script: SeedScript, interval: float = 1.0, **header_args: object) -> Path:
    """One node and one cgroup record per second for ``len(script.stall_ms)`` seconds, then ``end``."""
    hdr = replace(header(interval, **header_args))  # type: ignore[arg-type]
    writer = TraceWriter.create(path, hdr)
    total = 0
    events_high = 0
    high: Optional[int] = None
    steps = round(1.0 / interval)
    seconds = len(script.stall_ms)
    for k in range(seconds * steps):
        second, part = divmod(k, steps)
        t = START + k * interval
        writer.node(t, node_snapshot())
        if script.gone_at is not None and second >= script.gone_at:
            if part == 0 and second == script.gone_at:
                writer.gone(t + 0.001, script.cgroup)
            continue
        if part == 0:
            high = script.high.get(second, high)
            events_high += script.events_high.get(second, 0)
        writer.cgroup(t + 0.001, cgroup_snapshot(script, total, events_high, high))
        total += script.stall_ms[second] * 1000 // steps
    writer.end(START + seconds * interval, EndReason.DURATION)
    writer.close()
    return path


def stall(*spans: tuple[int, int, int]) -> List[int]:
    """Stall per second from (from second, to second, ms per second) spans; the length is the last end."""
    length = max(end for _, end, _ in spans)
    out = [0] * length
    for start, end, ms in spans:
        for second in range(start, end):
            out[second] = ms
    return out
