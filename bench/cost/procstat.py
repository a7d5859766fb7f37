"""What a process and the machine spent, from /proc: CPU time, context switches, memory.

Voluntary context switches are the process's wake-ups (each time it blocked
and was woken again); they are summed over all its threads, because
/proc/<pid>/status counts only the thread it names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
PSIMON_COMM = "psimon"


@dataclass(frozen=True)
class ProcessCost:
    cpu_sec: float  # user + system, all threads
    voluntary_switches: int
    involuntary_switches: int
    rss_kib: int
    peak_rss_kib: int  # VmHWM


def _status_fields(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _kib(value: str) -> int:
    return int(value.split(maxsplit=1)[0]) if value else 0


def read_process_cost(pid: int) -> ProcessCost:
    ticks = os.sysconf("SC_CLK_TCK")
    # Fields after the command name (which may contain spaces): utime and stime are 14 and 15.
    stat = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    voluntary = involuntary = 0
    for task in (PROC / str(pid) / "task").iterdir():
        try:
            fields = _status_fields(task / "status")
        except OSError:
            continue  # a thread that just exited
        voluntary += int(fields.get("voluntary_ctxt_switches", "0"))
        involuntary += int(fields.get("nonvoluntary_ctxt_switches", "0"))
    status = _status_fields(PROC / str(pid) / "status")
    rss, peak = _kib(status.get("VmRSS", "")), _kib(status.get("VmHWM", ""))
    return ProcessCost(cpu, voluntary, involuntary, rss, peak)


def system_busy_sec() -> float:
    """CPU seconds the whole machine spent not idle (all CPUs, kernel threads included)."""
    first = (PROC / "stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    # guest and guest_nice are already included in user and nice.
    busy = sum(values[:8]) - idle
    return busy / os.sysconf("SC_CLK_TCK")


def count_kernel_threads(comm: str = PSIMON_COMM) -> int:
    """Threads named ``comm`` (psimon: the kernel's per-cgroup PSI trigger poller)."""
    count = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == comm:
                count += 1
        except OSError:
            continue
    return count
