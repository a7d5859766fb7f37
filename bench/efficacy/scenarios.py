"""The benchmark's scenarios and series: what runs, in which cgroup, under which remediation.

Sizes are fractions of memory.max so that one knob (``memory_max_mib``) scales a
scenario. Files are on a real block device (page cache that reclaim can drop);
tmpfs is shmem (counted in ``file``, not reclaimable without swap).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Dict, Optional, Tuple

MIB = 1 << 20

# The cgroup the workload runs in. The shipped services-cache policy selects
# "system.slice/*.service", so in the VM this name is what makes the daemon watch it.
VM_CGROUP = "system.slice/bench.service"
# Natively the benchmark never goes into systemd's tree: its own top-level cgroup
# (and the shipped policy's include is pointed at it, see native.py).
NATIVE_CGROUP = "remediator-bench/bench.service"

# The data files the scan loop maps: together they are larger than memory.max,
# and each one alone does not fit beside the anonymous heap.
DATA_FILES: Tuple[str, ...] = ("data-0.bin", "data-1.bin")
DATA_FILE_MIB = 192

# A tree for the noisy neighbour's batch job (tar of it), larger than the slice's memory.max.
TREE_DIR = "tree"
TREE_FILES = 96
TREE_FILE_MIB = 4

# The static grid: memory.high as a fraction of memory.max, written once before the workload.
# 0.9 is kubelet's MemoryQoS ("static"); the lower points are what an operator who tuned by
# hand might pick. The report names the best of them per scenario ("static-best").
STATIC_GRID: Dict[str, float] = {"static": 0.9, "static-0.75": 0.75, "static-0.6": 0.6}

SERIES: Tuple[str, ...] = ("none", "static", "remediator", "dry-run")
# The matrix of issue 13 adds the static grid's lower points and the peer Senpai.
MATRIX_SERIES: Tuple[str, ...] = (
    "none",
    "static",
    "static-0.75",
    "static-0.6",
    "senpai",
    "remediator",
    "dry-run",
)
# Not in the default set: the time-driven reference issue 6 measured (runner.ReclaimLoop).
EXTRA_SERIES: Tuple[str, ...] = ("reclaim-loop",)
ALL_SERIES: Tuple[str, ...] = (*MATRIX_SERIES, *EXTRA_SERIES)
SERIES_TITLES: Dict[str, str] = {
    "none": "none (kernel alone)",
    "static": "static memory.high = 0.9 x memory.max",
    "static-0.75": "static memory.high = 0.75 x memory.max",
    "static-0.6": "static memory.high = 0.6 x memory.max",
    "senpai": "Senpai (peer, defaults)",
    "remediator": "remediator (shipped policies, enforcing)",
    "dry-run": "remediator dry-run",
    "reclaim-loop": "reference: memory.reclaim 32 MiB every 0.5 s",
}
# The scan loop's demand in MiB/s, as a service serves the requests it gets: on a shared or
# emulated host a loop running flat out scans as fast as that run's CPU allows, and its stall
# share follows (measured in the VM: none's full stall 7-17 % as its throughput went from 33
# to 95 MiB/s). At a fixed demand, series are compared at the same work rate and throughput
# says whether the workload kept up. About half what the VM reaches flat out on a loaded host.
DEMAND_MIB_S = 32.0
# memory.high of the "static" series: what kubelet's MemoryQoS sets (throttling factor 0.9).
STATIC_HIGH_FRACTION = 0.9


class WorkloadKind(str, Enum):
    """What runs in the cgroup (runner.workload_argv builds each one's command)."""

    SCAN = "scan"  # workload.py: the seed's loop (mmap or read()), optional tmpfs and dirty writes
    FIO_READ = "fio-read"  # fio: sequential read() of files larger than the limit
    FIO_WRITE = "fio-write"  # fio: buffered sequential writes (dirty page cache)
    PGBENCH = "pgbench"  # PostgreSQL 15 and pgbench (select-only) in the same cgroup
    NEIGHBOUR = "neighbour"  # two services under one limited slice: a paced reader and a tar of a tree


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    memory_max_mib: int
    anon_fraction: float  # of memory.max: the heap that grows, then stays
    anon_ramp_sec: float
    tmpfs_fraction: float = 0.0  # of memory.max, written to tmpfs files before the loop
    access: str = "mmap"  # "mmap" (map, touch every page, unmap) | "read" (plain read())
    dirty_mib: int = 0  # rewritten after every pass, never fsynced
    pace_mib_s: float = 0.0  # the loop's demand (0: flat out)
    restart_on_oom_kill: bool = False  # Restart=on-failure: a crash loop instead of one life
    kind: WorkloadKind = WorkloadKind.SCAN
    # tmpfs written over this many seconds, from the start (0: all of it before the loop): shmem
    # that grows during the run, so a floor computed early is wrong later.
    tmpfs_fill_sec: float = 0.0
    # io.max wbps on the scratch disk for the workload's cgroup (0: no limit): a slow disk.
    write_bps_limit: int = 0
    # Clean page cache is what the scenario is about: the page-cache targets apply (the 1/2
    # one only where the measured clean cache share at the pressure is at least 20 %).
    page_cache: bool = False
    # The stall target as a share of none's where the issue names a stricter one (1/4).
    stall_fraction_of_none: Optional[float] = None
    # What the scenario is for, in one sentence (shown in the results).
    purpose: str = ""

    @property
    def memory_max_bytes(self) -> int:
        return self.memory_max_mib * MIB

    @property
    def anon_mib(self) -> int:
        return int(self.memory_max_mib * self.anon_fraction)

    @property
    def tmpfs_mib(self) -> int:
        return int(self.memory_max_mib * self.tmpfs_fraction)

    def static_high_bytes(self, fraction: float = STATIC_HIGH_FRACTION) -> int:
        return (int(self.memory_max_bytes * fraction) // 4096) * 4096


SCENARIOS: Dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name="seed",
            title="the seed: 45 % anon that stays, map-scan-unmap of files larger than the limit at 32 MiB/s",
            memory_max_mib=256,
            anon_fraction=0.45,
            anon_ramp_sec=8.0,
            pace_mib_s=DEMAND_MIB_S,
            purpose="clean page cache crowds out the workload: proactive reclaim should remove the stall",
            page_cache=True,
            stall_fraction_of_none=0.25,
        ),
        Scenario(
            name="tmpfs-heavy",
            title="the seed's loop with half of memory.max in tmpfs files",
            memory_max_mib=256,
            # A quarter anon (not 45 %): the loop keeps a quarter of the limit for page cache.
            anon_fraction=0.25,
            # The tmpfs files and the heap are in place before the loop reaches the limit:
            # the case is a cgroup whose memory IS mostly shmem, not one on its way there.
            anon_ramp_sec=0.0,
            tmpfs_fraction=0.5,
            pace_mib_s=DEMAND_MIB_S,
            purpose="shmem is not reclaimable: lowering memory.high only throttles, remediator must not",
        ),
        Scenario(
            name="beyond-limit",
            title="anon + tmpfs beyond memory.max",
            memory_max_mib=256,
            anon_fraction=0.45,
            anon_ramp_sec=8.0,
            tmpfs_fraction=0.6,
            pace_mib_s=DEMAND_MIB_S,
            purpose="nobody can save it without swap: the kernel OOM-kills the workload whatever is done; "
            "remediator must decline, with a record, and neither add kills nor stall it more while it lives",
        ),
        # Variants of the seed for the workload's other options (not in the default set).
        Scenario(
            name="seed-read",
            title="the seed with plain read() instead of mmap",
            memory_max_mib=256,
            anon_fraction=0.45,
            anon_ramp_sec=8.0,
            access="read",
            pace_mib_s=DEMAND_MIB_S,
            purpose="unmapped page cache: cheaper for the kernel to reclaim than mapped pages",
        ),
        Scenario(
            name="seed-flat-out",
            title="the seed with the loop scanning as fast as it can (no demand)",
            memory_max_mib=256,
            anon_fraction=0.45,
            anon_ramp_sec=8.0,
            purpose="the seed's real service did not pace itself: throughput and stall both follow the CPU "
            "the run got, so compare on a quiet host",
            page_cache=True,
            stall_fraction_of_none=0.25,
        ),
        # Issue 13: workloads nobody tuned the policy for.
        Scenario(
            name="fio-read",
            title="fio: read() streaming of two 192 MiB files as fast as it can, 45 % anon that stays",
            memory_max_mib=256,
            anon_fraction=0.45,
            anon_ramp_sec=8.0,
            kind=WorkloadKind.FIO_READ,
            # Flat out, as a backup or a scan streams: at 32 MiB/s fio under TCG fell behind its
            # rate (25 MiB/s) and the kernel alone stalled under 2 % of the time, too little to
            # compare series by.
            purpose="unmapped page cache from a real I/O tool: reclaim should remove the stall, and the "
            "reads' latency says what a user feels",
            page_cache=True,
            stall_fraction_of_none=0.25,
        ),
        Scenario(
            name="fio-write",
            title="fio: buffered writes of a 384 MiB file at 32 MiB/s on a fast disk, 45 % anon that stays",
            memory_max_mib=256,
            anon_fraction=0.45,
            anon_ramp_sec=8.0,
            kind=WorkloadKind.FIO_WRITE,
            pace_mib_s=DEMAND_MIB_S,
            purpose="dirty pages must be written back before reclaim can drop them",
            page_cache=True,
        ),
        Scenario(
            name="fio-write-slow",
            title="fio: the same buffered writes on a slow disk (io.max: 8 MiB/s of writes)",
            memory_max_mib=256,
            anon_fraction=0.45,
            anon_ramp_sec=8.0,
            kind=WorkloadKind.FIO_WRITE,
            pace_mib_s=DEMAND_MIB_S,
            write_bps_limit=8 * MIB,
            purpose="writeback slower than the writer: dirty and writeback pages pile up, which no "
            "reclaim can take; the kernel throttles the writer whatever is done",
            page_cache=True,
        ),
        Scenario(
            name="pgbench",
            title="PostgreSQL 15, pgbench select-only at scale 32 (about 2x memory.max), in the same cgroup",
            memory_max_mib=256,
            # Beside the server's backends and pgbench: a heap that stays, as in the seed.
            anon_fraction=0.25,
            anon_ramp_sec=0.0,
            kind=WorkloadKind.PGBENCH,
            purpose="a real database whose data set is twice its limit: what users feel is transactions "
            "per second and latency percentiles",
            page_cache=True,
        ),
        Scenario(
            name="neighbour",
            title="noisy neighbour: a reader at 16 MiB/s (30 % anon) and a tar of a 384 MiB tree, "
            "two services under one slice with memory.max",
            memory_max_mib=256,
            anon_fraction=0.3,
            anon_ramp_sec=4.0,
            access="read",
            kind=WorkloadKind.NEIGHBOUR,
            pace_mib_s=16.0,
            purpose="does the shipped policy protect the latency-sensitive service from a batch job "
            "beside it (both services' figures)",
            page_cache=True,
        ),
        Scenario(
            name="tmpfs-slow-fill",
            title="the seed's loop while tmpfs grows to half of memory.max over 20 s",
            memory_max_mib=256,
            anon_fraction=0.25,
            anon_ramp_sec=0.0,
            tmpfs_fraction=0.5,
            tmpfs_fill_sec=20.0,
            pace_mib_s=DEMAND_MIB_S,
            purpose="shmem that grows over the run: a memory.high floor computed early is wrong later",
        ),
        Scenario(
            name="seed-dirty",
            title="the seed with 32 MiB of dirty writes per pass",
            memory_max_mib=256,
            anon_fraction=0.45,
            anon_ramp_sec=8.0,
            dirty_mib=32,
            pace_mib_s=DEMAND_MIB_S,
            purpose="dirty pages need writeback before reclaim can take them",
        ),
    )
}
DEFAULT_SCENARIOS: Tuple[str, ...] = ("seed", "tmpfs-heavy", "beyond-limit")
# Issue 13's matrix (``--matrix``).
MATRIX_SCENARIOS: Tuple[str, ...] = (
    "seed",
    "seed-flat-out",
    "fio-read",
    "fio-write",
    "fio-write-slow",
    "pgbench",
    "neighbour",
    "tmpfs-heavy",
    "tmpfs-slow-fill",
    "beyond-limit",
)
# The neighbour's two services, under the scenario's cgroup (the slice with memory.max).
NEIGHBOUR_SENSITIVE = "sensitive.service"
NEIGHBOUR_BATCH = "batch.service"
# pgbench: the database (built on the host once, see vm.ensure_pg_image), its scale and clients.
# Scale 32 is ~500 MiB of tables and indexes: about twice memory.max.
PG_SCALE = 32
PG_CLIENTS = 2
PG_SHARED_BUFFERS_MIB = 16


def series_for(scenario: Scenario, series: Tuple[str, ...]) -> Tuple[str, ...]:
    """The series a scenario runs: the static grid's lower points are judged only against the
    page-cache targets, so they run only where page cache is what the scenario is about (in
    the shmem scenarios they would only throttle harder, which the 0.9 point already shows)."""
    if scenario.page_cache:
        return series
    return tuple(name for name in series if name not in STATIC_GRID or name == "static")


def scenario_named(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise ValueError(f"unknown scenario {name!r} (known: {known})") from None


def series_order(repeat: int, series: Tuple[str, ...] = SERIES) -> Tuple[str, ...]:
    """The series of one repeat, rotated by the repeat's index so that no series always
    runs first (a fresh VM) or last (after the others warmed or fragmented memory)."""
    shift = repeat % len(series)
    return series[shift:] + series[:shift]
