"""Fake cgroupfs and procfs trees in a temp dir, for unit tests.

Files are written the way the kernel formats them, so the real readers and
the real writer work on them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from remediator.kernel.roots import KernelRoots

SEED_STAT = {
    "anon": 1824923648,
    "file": 2387432448,
    "kernel_stack": 12582912,
    "slab": 44301312,
    "sock": 1048576,
    "anon_thp": 0,
    "file_mapped": 83886080,
}
SEED_EVENTS = {"low": 0, "high": 0, "max": 12, "oom": 1, "oom_kill": 1}
SEED_PRESSURE = (
    "some avg10=78.20 avg60=41.11 avg300=12.02 total=183742991\n"
    "full avg10=23.90 avg60=11.03 avg300=3.01 total=45112887\n"
)
QUIET_PRESSURE = (
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)

MEMINFO_NO_SWAP = (
    "MemTotal:       16384000 kB\n"
    "MemFree:         1024000 kB\n"
    "MemAvailable:    8192000 kB\n"
    "SwapTotal:             0 kB\n"
    "SwapFree:              0 kB\n"
    "SReclaimable:     204800 kB\n"
)


def pressure_text(
    some: tuple[float, float, float, int],
    full: Optional[tuple[float, float, float, int]] = (0.0, 0.0, 0.0, 0),
) -> str:
    lines = ["some avg10={:.2f} avg60={:.2f} avg300={:.2f} total={}".format(*some)]
    if full is not None:
        lines.append("full avg10={:.2f} avg60={:.2f} avg300={:.2f} total={}".format(*full))
    return "\n".join(lines) + "\n"


def _limit(value: Optional[int]) -> str:
    return "max" if value is None else str(value)


@dataclass
class FakeKernel:
    """A cgroup root and a proc root under one temp dir."""

    base: Path

    def __post_init__(self) -> None:
        self.cgroup_root.mkdir(parents=True, exist_ok=True)
        (self.proc_root / "pressure").mkdir(parents=True, exist_ok=True)
        (self.proc_root / "sys" / "vm").mkdir(parents=True, exist_ok=True)
        (self.cgroup_root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
        (self.cgroup_root / "cgroup.subtree_control").write_text("cpu io memory pids\n")
        (self.cgroup_root / "memory.pressure").write_text(QUIET_PRESSURE)
        (self.cgroup_root / "memory.stat").write_text("anon 0\nfile 0\n")
        (self.proc_root / "pressure" / "memory").write_text(QUIET_PRESSURE)
        (self.proc_root / "meminfo").write_text(MEMINFO_NO_SWAP)
        (self.proc_root / "sys" / "vm" / "vfs_cache_pressure").write_text("100\n")
        (self.proc_root / "sys" / "vm" / "drop_caches").write_text("0\n")
        (self.proc_root / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
        (self.proc_root / "sys" / "kernel" / "osrelease").write_text("6.1.0-fake-amd64\n")
        self.write_mounts_v2()

    @property
    def cgroup_root(self) -> Path:
        return self.base / "cgroup"

    @property
    def proc_root(self) -> Path:
        return self.base / "proc"

    @property
    def roots(self) -> KernelRoots:
        return KernelRoots(cgroup_root=self.cgroup_root, proc_root=self.proc_root)

    def write_mounts_v2(self) -> None:
        (self.proc_root / "self").mkdir(parents=True, exist_ok=True)
        (self.proc_root / "self" / "mounts").write_text(
            "proc /proc proc rw,relatime 0 0\n"
            f"cgroup2 {self.cgroup_root} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
        )
        (self.proc_root / "filesystems").write_text("nodev\tcgroup\nnodev\tcgroup2\nnodev\tproc\n")

    def add_cgroup(
        self,
        name: str,
        *,
        current: int = 0,
        max_bytes: Optional[int] = None,
        high: Optional[int] = None,
        min_bytes: int = 0,
        low: int = 0,
        swap_max: Optional[int] = None,
        stat: Optional[Mapping[str, int]] = None,
        events: Optional[Mapping[str, int]] = None,
        pressure: str = QUIET_PRESSURE,
        with_reclaim: bool = True,
    ) -> Path:
        d = self.cgroup_root / name
        # Controllers are enabled top-down: every ancestor of a memory cgroup has
        # the memory files too (the walker skips subtrees without them).
        parent = name.rsplit("/", 1)[0] if "/" in name else ""
        if parent and not (self.cgroup_root / parent / "memory.current").exists():
            self.add_cgroup(parent)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.controllers").write_text("cpu io memory pids\n")
        (d / "cgroup.procs").write_text("")
        (d / "memory.current").write_text(f"{current}\n")
        (d / "memory.max").write_text(_limit(max_bytes) + "\n")
        (d / "memory.high").write_text(_limit(high) + "\n")
        (d / "memory.min").write_text(f"{min_bytes}\n")
        (d / "memory.low").write_text(f"{low}\n")
        (d / "memory.swap.max").write_text(_limit(swap_max) + "\n")
        (d / "memory.stat").write_text(
            "".join(f"{k} {v}\n" for k, v in (stat or {"anon": 0, "file": 0}).items())
        )
        ev = {"low": 0, "high": 0, "max": 0, "oom": 0, "oom_kill": 0, "oom_group_kill": 0}
        ev.update(events or {})
        (d / "memory.events").write_text("".join(f"{k} {v}\n" for k, v in ev.items()))
        (d / "memory.events.local").write_text("".join(f"{k} {v}\n" for k, v in ev.items()))
        (d / "memory.pressure").write_text(pressure)
        if with_reclaim:
            (d / "memory.reclaim").write_text("")
        return d

    def add_seed(self, name: str = "system.slice/seed.service") -> Path:
        """The issue's seed: a 4 GiB service at its limit, 2.3 GiB of it page cache, memory.high unset."""
        return self.add_cgroup(
            name,
            current=4294836224,
            max_bytes=4294967296,
            high=None,
            stat=SEED_STAT,
            events=SEED_EVENTS,
            pressure=SEED_PRESSURE,
        )

    def set_file(self, cgroup: str, filename: str, text: str) -> None:
        (self.cgroup_root / cgroup / filename).write_text(text)

    def read_file(self, cgroup: str, filename: str) -> str:
        return (self.cgroup_root / cgroup / filename).read_text()

    def set_pressure(self, cgroup: Optional[str], text: str) -> None:
        """Set a cgroup's memory.pressure, or the node's when cgroup is None."""
        if cgroup is None:
            (self.proc_root / "pressure" / "memory").write_text(text)
        else:
            self.set_file(cgroup, "memory.pressure", text)

    def snapshot_files(self) -> dict[str, bytes]:
        """Every file's bytes under both roots: to prove that nothing changed."""
        out: dict[str, bytes] = {}
        for p in sorted(self.base.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(self.base))] = p.read_bytes()
        return out
