"""The benchmark's scenarios and series: what runs, in which cgroup, under which remediation.

Sizes are fractions of memory.max so that one knob (``memory_max_mib``) scales a
scenario. Files are on a real block device (page cache that reclaim can drop);
tmpfs is shmem (counted in ``file``, not reclaimable without swap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

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

SERIES: Tuple[str, ...] = ("none", "static", "remediator", "dry-run")
# Not in the default set: the time-driven reference issue 6 measured (runner.ReclaimLoop).
EXTRA_SERIES: Tuple[str, ...] = ("reclaim-loop",)
ALL_SERIES: Tuple[str, ...] = SERIES + EXTRA_SERIES
SERIES_TITLES: Dict[str, str] = {
    "none": "none (kernel alone)",
    "static": "static memory.high = 0.9 x memory.max",
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

    def static_high_bytes(self) -> int:
        return (int(self.memory_max_bytes * STATIC_HIGH_FRACTION) // 4096) * 4096


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
            purpose="throughput and stall both follow the CPU the run got: compare on a quiet host",
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
