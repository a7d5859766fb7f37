"""Trace size per cgroup-hour, on a synthetic seed loop (issue 15; docs/trace-format.md, "Size").

    .venv/bin/python -m bench.trace_size [--interval SEC] [--hours H]

SYNTHETIC: the snapshots are generated here, shaped like the efficacy benchmark's seed
loop (bench/efficacy, scenario ``seed``): a 1 GiB cgroup held at its limit by an anon
heap at 45 % and a loop mapping two 192 MiB files at 32 MiB/s, so that reclaim runs all
the time and every value the trace keeps moves at every sample (current, the file/anon
split, dirty pages, slab, the reclaim and refault counters, memory.events max, PSI
totals every sample and averages every 2 s as the kernel updates them). That is the
worst case for the delta encoding; an idle cgroup (the many others a policy may select)
is measured beside it. The file is written exactly as ``remediator record`` writes it
(TraceWriter, gzip flushed after every sample). The figure a VM run of the real seed
loop gives replaces this one in the docs once measured.

A cgroup's cost is the size of a trace with the node and that cgroup minus the size of
the node-only trace of the same length; the node's own cost (and the gzip flushes, one
per sample per file) is reported separately.
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple

from remediator import __version__
from remediator.readings import (
    CgroupSnapshot,
    MemoryEvents,
    MemoryStat,
    NodeSnapshot,
    Pressure,
    PressureLine,
)
from remediator.trace.format import (
    EndReason,
    NodeWatchMode,
    PolicyDigest,
    TraceCapabilities,
    TraceHeader,
    TraceSource,
)
from remediator.trace.writer import TraceWriter

PAGE = 4096
MIB = 1 << 20
LIMIT = 1 << 30
# The kernel recomputes the PSI averages every 2 s (psi.c PSI_FREQ).
PSI_AVG_PERIOD_SEC = 2.0


def _header(interval: float) -> TraceHeader:
    return TraceHeader(
        node="synthetic",
        kernel_release="6.1.0-synthetic",
        capabilities=TraceCapabilities(True, NodeWatchMode.TRIGGERS, True, True, ("synthetic trace",)),
        policies=(PolicyDigest("services-cache.yaml", "0" * 64),),
        start_wall=1_764_944_000.0,
        start_monotonic=0.0,
        source=TraceSource.RECORD,
        interval_sec=interval,
        remediator_version=__version__,
    )


def _avgs(rng: random.Random, level: float) -> PressureLine:
    return PressureLine(
        round(max(0.0, rng.gauss(level, level / 3)), 2),
        round(max(0.0, rng.gauss(level * 0.7, level / 5)), 2),
        round(max(0.0, rng.gauss(level * 0.4, level / 8)), 2),
        0,
    )


@dataclass
class _Psi:
    some: PressureLine
    full: PressureLine
    updated_at: float = -PSI_AVG_PERIOD_SEC

    def step(self, rng: random.Random, t: float, interval: float, level: float) -> Pressure:
        # Totals move continuously; the averages only when the kernel recomputes them.
        some_total = self.some.total_us + int(rng.uniform(0.5, 1.5) * level / 100 * interval * 1e6)
        full_total = self.full.total_us + int(rng.uniform(0.5, 1.5) * level / 300 * interval * 1e6)
        if t - self.updated_at >= PSI_AVG_PERIOD_SEC:
            self.some, self.full, self.updated_at = _avgs(rng, level), _avgs(rng, level / 3), t
        self.some = replace(self.some, total_us=some_total)
        self.full = replace(self.full, total_us=full_total)
        return Pressure(self.some, self.full)


class SeedLoop:
    """A cgroup at its 1 GiB limit, its page cache churned at 32 MiB/s."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = random.Random(seed)
        self.psi = _Psi(PressureLine(0, 0, 0, 0), PressureLine(0, 0, 0, 0))
        self.counters = {
            "pgscan": 0,
            "pgsteal": 0,
            "workingset_refault_file": 0,
            "workingset_activate_file": 0,
            "pgmajfault": 0,
        }
        self.events_max = 0

    def pages(self, low_mib: float, high_mib: float) -> int:
        return int(self.rng.uniform(low_mib, high_mib) * MIB) // PAGE * PAGE

    def snapshot(self, t: float, interval: float) -> CgroupSnapshot:
        rng = self.rng
        anon = int(LIMIT * 0.45) // PAGE * PAGE + self.pages(-2, 2)
        mapped = int((t * 32) % 384) * MIB  # two 192 MiB files mapped, touched, unmapped
        slab = 24 * MIB + self.pages(-1, 1)
        kernel = slab + 3 * MIB + mapped // 512  # stacks, percpu, page tables of the mapping
        current = LIMIT - self.pages(0, 8)  # reclaim holds it just under memory.max
        file = max(0, current - anon - kernel)
        active_file = file // 2 + self.pages(-16, 16)
        for key, per_sec in (
            ("pgscan", 12000),
            ("pgsteal", 8192),
            ("workingset_refault_file", 4000),
            ("workingset_activate_file", 1000),
            ("pgmajfault", 120),
        ):
            self.counters[key] += int(rng.uniform(0.7, 1.3) * per_sec * interval)
        self.events_max += rng.randint(0, 3)
        stat = {
            "anon": anon,
            "file": file,
            "kernel": kernel,
            "kernel_stack": 1 * MIB,
            "pagetables": 1 * MIB + mapped // 512,
            "percpu": 512 * 1024,
            "sock": 0,
            "vmalloc": 0,
            "shmem": 4 * MIB,
            "file_mapped": mapped,
            "file_dirty": self.pages(0, 0.5),
            "file_writeback": 0,
            "swapcached": 0,
            "active_anon": anon + 4 * MIB,
            "inactive_anon": 0,
            "active_file": active_file,
            "inactive_file": file - 4 * MIB - active_file,
            "unevictable": 0,
            "slab_reclaimable": slab * 2 // 3,
            "slab_unreclaimable": slab - slab * 2 // 3,
            "slab": slab,
            **self.counters,
        }
        return CgroupSnapshot(
            cgroup=self.name,
            current_bytes=current,
            max_bytes=LIMIT,
            high_bytes=None,
            min_bytes=0,
            low_bytes=0,
            swap_max_bytes=None,
            stat=MemoryStat(stat),
            events=MemoryEvents(max=self.events_max),
            pressure=self.psi.step(rng, t, interval, level=20.0),
            events_local=MemoryEvents(max=self.events_max),
        )


class Idle:
    """A cgroup nobody is pressuring: a few pages move about every half minute."""

    def __init__(self, name: str, seed: int) -> None:
        self.rng = random.Random(seed)
        quiet = PressureLine(0.0, 0.0, 0.0, 1234567)
        self.base = CgroupSnapshot(
            cgroup=name,
            current_bytes=64 * MIB,
            max_bytes=None,
            high_bytes=None,
            min_bytes=0,
            low_bytes=0,
            swap_max_bytes=None,
            stat=MemoryStat({"anon": 40 * MIB, "file": 20 * MIB, "kernel": 4 * MIB, "slab": 2 * MIB}),
            events=MemoryEvents(),
            pressure=Pressure(quiet, quiet),
            events_local=MemoryEvents(),
        )

    def snapshot(self, t: float, interval: float) -> CgroupSnapshot:
        if self.rng.random() < interval / 30:
            delta = self.rng.randint(-4, 4) * PAGE
            stat = dict(self.base.stat.values)
            stat["anon"] += delta
            self.base = replace(
                self.base, current_bytes=self.base.current_bytes + delta, stat=MemoryStat(stat)
            )
        return self.base


class Node:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.psi = _Psi(PressureLine(0, 0, 0, 0), PressureLine(0, 0, 0, 0))

    def snapshot(self, t: float, interval: float) -> NodeSnapshot:
        return NodeSnapshot(
            pressure=self.psi.step(self.rng, t, interval, level=2.0),
            mem_total_bytes=4 << 30,
            mem_available_bytes=(2 << 30) + self.rng.randint(-2048, 2048) * PAGE,
            swap_total_bytes=0,
            swap_free_bytes=0,
            slab_reclaimable_bytes=(100 * MIB) + self.rng.randint(-64, 64) * PAGE,
            vfs_cache_pressure=100,
        )


Source = Callable[[float, float], CgroupSnapshot]


class _Kept(io.BytesIO):
    def close(self) -> None:
        pass


def trace_bytes(cgroups: Sequence[Source], interval: float, hours: float, compressed: bool) -> int:
    """The size of an ``hours`` long trace of the node and ``cgroups``, written as `record` writes it."""
    buffer = _Kept()
    stream = gzip.GzipFile(mode="wb", fileobj=buffer) if compressed else buffer
    writer = TraceWriter(stream, _header(interval), raw=buffer if compressed else None)  # type: ignore[arg-type]
    node = Node(seed=1)
    steps = int(hours * 3600 / interval)
    for step in range(steps + 1):
        t = step * interval
        writer.node(t, node.snapshot(t, interval))
        for source in cgroups:
            writer.cgroup(t, source(t, interval))
        writer.flush()
    writer.end(steps * interval, EndReason.DURATION)
    writer.close()
    return len(buffer.getvalue())


def measure(interval: float, hours: float) -> List[str]:
    def seeds(n: int) -> List[Source]:
        return [SeedLoop(f"system.slice/seed-{i}.service", seed=10 + i).snapshot for i in range(n)]

    def idles(n: int) -> List[Source]:
        return [Idle(f"system.slice/idle-{i}.service", seed=100 + i).snapshot for i in range(n)]

    rows = [
        f"| per hour, interval {interval:g} s (SYNTHETIC) | plain | gzip |",
        "| --- | ---: | ---: |",
    ]
    base = {c: trace_bytes([], interval, hours, c) for c in (False, True)}
    node_label = "node only (header, node records, end; gzip: one sync flush per sample)"
    rows.append(f"| {node_label} | {_kib(base[False] / hours)} | {_kib(base[True] / hours)} |")
    factories: List[Tuple[str, Callable[[], List[Source]]]] = [
        ("one pressured seed-loop cgroup", lambda: seeds(1)),
        ("each of 10 pressured seed-loop cgroups", lambda: seeds(10)),
        ("one idle cgroup", lambda: idles(1)),
        ("each of 100 idle cgroups", lambda: idles(100)),
    ]
    for label, make in factories:
        # Fresh generators for each run, so plain and gzip hold the same sequence.
        sizes = {c: trace_bytes(make(), interval, hours, c) for c in (False, True)}
        count = len(make())
        per = {c: (sizes[c] - base[c]) / count / hours for c in (False, True)}
        rows.append(f"| {label} | {_kib(per[False])} | {_kib(per[True])} |")
    return rows


def _kib(value: float) -> str:
    return f"{value / 1024:,.0f} KiB" if value < 10 * MIB else f"{value / MIB:,.1f} MiB"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--interval", type=float, action="append", help="seconds (repeatable; default 1 and 2)"
    )
    parser.add_argument("--hours", type=float, default=1.0)
    args = parser.parse_args(argv)
    for interval in args.interval or [1.0, 2.0]:
        print("\n".join(measure(interval, args.hours)))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
