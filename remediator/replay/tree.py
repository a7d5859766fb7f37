"""A private cgroup and proc tree holding what a trace says the kernel said.

The replayed daemon reads its kernel through ``KernelRoots`` like any other
daemon: here the roots are two directories in a temporary folder, and every
recorded reading is written there in the kernel's own format, so the real
readers parse it unchanged. Nothing outside the folder is touched.

What the tree holds at time ``t``: every file as last recorded at or before
``t``, except the ``total`` counters of ``memory.pressure`` (and of the
node's ``/proc/pressure/memory``), which are taken on the line between the
samples around ``t`` (``remediator.replay.curves``): a timed look between two
samples sees the stall that accrued until then, not a counter frozen since
the last sample (which would read as calm).

Ancestors of a recorded cgroup that were not recorded themselves exist with
the memory controller (the walk descends only through such cgroups) and
quiet, empty readings.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from remediator.kernel.roots import KernelRoots
from remediator.readings import CgroupSnapshot, MemoryEvents, NodeSnapshot, Pressure, PressureLine
from remediator.replay.curves import StallCurves
from remediator.trace.format import TraceHeader

CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n"
_QUIET = Pressure(PressureLine(0.0, 0.0, 0.0, 0), PressureLine(0.0, 0.0, 0.0, 0))
_EMPTY_STAT = "anon 0\nfile 0\n"


def pressure_text(pressure: Pressure, totals: Optional[Tuple[int, Optional[int]]] = None) -> str:
    """``memory.pressure`` as the kernel prints it; ``totals`` replace the recorded counters."""
    some_total = pressure.some.total_us if totals is None else totals[0]
    lines = [_pressure_line("some", pressure.some, some_total)]
    if pressure.full is not None:
        full_total = pressure.full.total_us if totals is None or totals[1] is None else totals[1]
        lines.append(_pressure_line("full", pressure.full, full_total))
    return "\n".join(lines) + "\n"


def _pressure_line(kind: str, line: PressureLine, total: int) -> str:
    return f"{kind} avg10={line.avg10:.2f} avg60={line.avg60:.2f} avg300={line.avg300:.2f} total={total}"


def _limit(value: Optional[int]) -> str:
    return "max" if value is None else str(value)


def _events_text(events: MemoryEvents) -> str:
    pairs = [
        ("low", events.low),
        ("high", events.high),
        ("max", events.max),
        ("oom", events.oom),
        ("oom_kill", events.oom_kill),
        ("oom_group_kill", events.oom_group_kill),
        *events.other.items(),
    ]
    return "".join(f"{key} {value}\n" for key, value in pairs)


def cgroup_files(snapshot: CgroupSnapshot) -> Dict[str, str]:
    """Every memory file of a cgroup snapshot, as the kernel prints it (pressure apart)."""
    files = {
        "memory.current": f"{snapshot.current_bytes}\n",
        "memory.max": _limit(snapshot.max_bytes) + "\n",
        "memory.high": _limit(snapshot.high_bytes) + "\n",
        "memory.min": f"{snapshot.min_bytes}\n",
        "memory.low": f"{snapshot.low_bytes}\n",
        "memory.swap.max": _limit(snapshot.swap_max_bytes) + "\n",
        "memory.stat": "".join(f"{key} {value}\n" for key, value in snapshot.stat.values.items()),
        "memory.events": _events_text(snapshot.events),
    }
    if snapshot.events_local is not None:
        files["memory.events.local"] = _events_text(snapshot.events_local)
    return files


def _meminfo_text(node: NodeSnapshot) -> str:
    pairs = (
        ("MemTotal", node.mem_total_bytes),
        ("MemAvailable", node.mem_available_bytes),
        ("SwapTotal", node.swap_total_bytes),
        ("SwapFree", node.swap_free_bytes),
        ("SReclaimable", node.slab_reclaimable_bytes),
    )
    return "".join(f"{key}:{value // 1024:>16} kB\n" for key, value in pairs)


class SimulatedTree:
    """The replay's kernel: see the module docstring."""

    def __init__(self, base: Path, header: TraceHeader, curves: StallCurves) -> None:
        self.base = base
        self.header = header
        self.curves = curves
        self.roots = KernelRoots(cgroup_root=base / "cgroup", proc_root=base / "proc")
        # Live recorded cgroups (None: the node) -> (last snapshot's pressure, incarnation).
        self._live: Dict[Optional[str], Tuple[Pressure, int]] = {}
        self._written: Dict[Path, str] = {}
        self._ancestors: Set[str] = set()
        self.recorded: Set[str] = set()
        self._setup()

    # ---- the fixed part ------------------------------------------------
    def _setup(self) -> None:
        cgroup_root, proc_root = self.roots.cgroup_root, self.roots.proc_root
        for directory in (cgroup_root, proc_root / "pressure", proc_root / "sys" / "vm",
                          proc_root / "sys" / "kernel", proc_root / "self"):  # fmt: skip
            directory.mkdir(parents=True, exist_ok=True)
        self._write(cgroup_root / "cgroup.controllers", CONTROLLERS)
        self._write(cgroup_root / "cgroup.subtree_control", "cpu io memory pids\n")
        self._write(cgroup_root / "memory.pressure", pressure_text(_QUIET))
        self._write(cgroup_root / "memory.stat", _EMPTY_STAT)
        self._write(proc_root / "pressure" / "memory", pressure_text(_QUIET))
        self._write(proc_root / "sys" / "vm" / "drop_caches", "0\n")
        self._write(proc_root / "sys" / "vm" / "vfs_cache_pressure", "100\n")
        self._write(proc_root / "sys" / "kernel" / "osrelease", self.header.kernel_release + "\n")
        self._write(proc_root / "sys" / "kernel" / "hostname", self.header.node + "\n")
        self._write(
            proc_root / "self" / "mounts",
            "proc /proc proc rw,relatime 0 0\n"
            f"cgroup2 {cgroup_root} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n",
        )
        self._write(proc_root / "filesystems", "nodev\tcgroup\nnodev\tcgroup2\nnodev\tproc\n")

    def _write(self, path: Path, text: str) -> None:
        if self._written.get(path) == text:
            return
        path.write_text(text)
        self._written[path] = text

    def _cgroup_dir(self, cgroup: str, ancestor: bool) -> Path:
        directory = self.roots.cgroup_dir(cgroup)
        if directory.is_dir():
            return directory
        parent = cgroup.rsplit("/", 1)[0] if "/" in cgroup else ""
        if parent and not self.roots.cgroup_dir(parent).is_dir():
            self._cgroup_dir(parent, ancestor=True)
        directory.mkdir()
        self._write(directory / "cgroup.controllers", "cpu io memory pids\n")
        self._write(directory / "cgroup.procs", "")
        if self.header.capabilities.memory_reclaim:
            self._write(directory / "memory.reclaim", "")
        if ancestor:
            self._ancestors.add(cgroup)
            quiet = {"memory.current": "0\n", "memory.max": "max\n", "memory.high": "max\n",
                     "memory.min": "0\n", "memory.low": "0\n", "memory.swap.max": "max\n",
                     "memory.stat": _EMPTY_STAT, "memory.events": _events_text(MemoryEvents()),
                     "memory.events.local": _events_text(MemoryEvents()),
                     "memory.pressure": pressure_text(_QUIET)}  # fmt: skip
            for name, text in quiet.items():
                self._write(directory / name, text)
        return directory

    # ---- recorded readings ---------------------------------------------
    def cgroup(self, snapshot: CgroupSnapshot, incarnation: int, now: float) -> None:
        """Write a cgroup's recorded files (a cgroup not there yet is made)."""
        name = snapshot.cgroup
        directory = self._cgroup_dir(name, ancestor=False)
        self._ancestors.discard(name)
        self.recorded.add(name)
        if name not in self._live and not snapshot.events_local:
            (directory / "memory.events.local").unlink(missing_ok=True)
            self._written.pop(directory / "memory.events.local", None)
        for filename, text in cgroup_files(snapshot).items():
            self._write(directory / filename, text)
        self._live[name] = (snapshot.pressure, incarnation)
        self._refresh_one(name, now)

    def node(self, snapshot: NodeSnapshot, incarnation: int, now: float) -> None:
        proc_root = self.roots.proc_root
        self._write(proc_root / "meminfo", _meminfo_text(snapshot))
        vfs = proc_root / "sys" / "vm" / "vfs_cache_pressure"
        if snapshot.vfs_cache_pressure is None:
            vfs.unlink(missing_ok=True)
            self._written.pop(vfs, None)
        else:
            self._write(vfs, f"{snapshot.vfs_cache_pressure}\n")
        self._live[None] = (snapshot.pressure, incarnation)
        self._refresh_one(None, now)

    def removed(self, cgroup: str) -> None:
        """The cgroup is gone: its directory (and any below it) goes."""
        directory = self.roots.cgroup_dir(cgroup)
        for name in [c for c in self._live if c is not None and (c == cgroup or c.startswith(cgroup + "/"))]:
            del self._live[name]
        shutil.rmtree(directory, ignore_errors=True)
        prefix = str(directory) + os.sep
        for path in [p for p in self._written if str(p).startswith(prefix)]:
            del self._written[path]

    # ---- time ----------------------------------------------------------
    def refresh(self, now: float) -> None:
        """Bring every pressure counter to ``now`` (see the module docstring)."""
        for name in list(self._live):
            self._refresh_one(name, now)

    def _refresh_one(self, name: Optional[str], now: float) -> None:
        pressure, incarnation = self._live[name]
        totals = (
            self._total_at(name, "some", now, incarnation, pressure.some.total_us),
            None
            if pressure.full is None
            else self._total_at(name, "full", now, incarnation, pressure.full.total_us),
        )
        if name is None:
            path = self.roots.proc_file("pressure/memory")
        else:
            path = self.roots.cgroup_file(name, "memory.pressure")
        self._write(path, pressure_text(pressure, (totals[0], totals[1])))

    def _total_at(self, name: Optional[str], kind: str, now: float, incarnation: int, default: int) -> int:
        curve = self.curves.curve(name, kind)
        value = None if curve is None else curve.at(now, incarnation)
        return default if value is None else round(value)

    def incarnation(self, name: Optional[str]) -> int:
        """The incarnation of the live cgroup (None: the node) the tree holds now."""
        live = self._live.get(name)
        return 0 if live is None else live[1]

    # ---- what the replay can say about it --------------------------------
    def unrecorded(self, cgroups: Iterable[Optional[str]]) -> List[str]:
        """Those of ``cgroups`` that exist here only as ancestors of recorded ones."""
        return sorted({c for c in cgroups if c is not None and c in self._ancestors})


__all__ = ["SimulatedTree", "cgroup_files", "pressure_text"]
