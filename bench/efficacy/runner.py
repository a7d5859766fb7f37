"""One benchmark run on a host with a cgroup v2 memory controller: the VM's guest, or a real node.

A run: create the cgroup (memory.max, no swap), evict the data files from the
page cache, set up the series (static memory.high, or the daemon with its
policies), start the workload inside the cgroup, sample the cgroup's memory
files twice a second for ``duration_sec``, then stop the workload, stop the
daemon (which restores what it changed) and remove everything it created.
The result is plain JSON: samples, the workload's progress, the daemon's
records, and the metrics computed from them (``metrics.summarize``).

This module writes cgroup files and mounts a tmpfs: it runs only where that is
allowed (``guest.py`` in the VM, ``native.py`` after its checks).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from bench.efficacy.metrics import summarize
from bench.efficacy.peers import SenpaiProcess
from bench.efficacy.scenarios import (
    NEIGHBOUR_BATCH,
    NEIGHBOUR_SENSITIVE,
    PG_CLIENTS,
    PG_SHARED_BUFFERS_MIB,
    STATIC_GRID,
    Scenario,
    WorkloadKind,
)
from remediator.errors import KernelError, KernelParseError
from remediator.kernel.roots import KernelRoots
from remediator.kernel.snapshot import read_cgroup_snapshot
from remediator.readings import CgroupSnapshot
from remediator.records import RecordType

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_INTERVAL_SEC = 0.5
DAEMON_READY_TIMEOUT_SEC = 120.0
# The daemon rescans for new cgroups every rescan_interval_sec; the run waits for
# its "target watched" record so that every series starts with the daemon watching.
DAEMON_WATCH_TIMEOUT_SEC = 60.0
RESCAN_INTERVAL_SEC = 2
RECLAIM_LOOP_BYTES = 32 << 20
RECLAIM_LOOP_INTERVAL_SEC = 0.5
# The workload is told to run longer than the window: the runner ends it, so the
# window is the same wall-clock span in every series.
WORKLOAD_OVERRUN_SEC = 3600.0
# fio and pgbench end by themselves just before the window does and print their own summary
# (throughput, latency percentiles); the runner waits this long for it before ending them.
RESULT_WAIT_SEC = 30.0
# Python's start-up and imports under emulation over 9p, on a loaded host.
WORKLOAD_READY_TIMEOUT_SEC = 120.0
STAT_KEYS = (
    "anon",
    "file",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "active_file",
    "inactive_file",
    "kernel",
    "slab",
    "sock",
    "pgmajfault",
    "workingset_refault_file",
)


@dataclass(frozen=True)
class RunSetup:
    """Where a run happens: the same code runs in the VM and natively."""

    roots: KernelRoots
    cgroup: str  # e.g. system.slice/bench.service
    data_files: Sequence[Path]
    scratch_dir: Path  # on a block device, writable: the dirty-write file
    work_dir: Path  # daemon state, tmpfs mount points (never charged to the cgroup)
    policies: Mapping[str, str]  # policy name -> YAML, for the daemon series
    python: str = sys.executable
    tree_dir: Optional[Path] = None  # the neighbour's batch job tars this tree (larger than the slice)
    pg_data_dir: Optional[Path] = None  # PostgreSQL's data directory (pgbench scale ~2x memory.max)
    senpai: Optional[Path] = None  # senpai.py, checked (peers.senpai_status); None: series skipped


@dataclass
class RunState:
    samples: List[Dict[str, Any]] = field(default_factory=list)
    progress: List[Dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The window's start (time.monotonic()): set when every workload is ready and released.
    t0: float = 0.0


def _sample(snapshot: CgroupSnapshot, t: float) -> Dict[str, Any]:
    full = snapshot.pressure.full
    return {
        "t": round(t, 3),
        "current": snapshot.current_bytes,
        "high": snapshot.high_bytes,
        "stat": {key: snapshot.stat.get(key) for key in STAT_KEYS},
        "some_avg10": snapshot.pressure.some.avg10,
        "some_total_us": snapshot.pressure.some.total_us,
        "full_avg10": full.avg10 if full is not None else 0.0,
        "full_total_us": full.total_us if full is not None else 0,
        "events": {
            "high": snapshot.events.high,
            "max": snapshot.events.max,
            "oom": snapshot.events.oom,
            "oom_kill": snapshot.events.oom_kill,
        },
    }


class BenchCgroup:
    """The benchmark's own cgroup (and its parents, created only if missing)."""

    def __init__(self, roots: KernelRoots, name: str) -> None:
        self.roots = roots
        self.name = name
        self.created_parents: List[Path] = []

    @property
    def path(self) -> Path:
        return self.roots.cgroup_dir(self.name)

    def create(self, memory_max: object, controllers: Sequence[str] = ("memory",)) -> None:
        parts = self.name.split("/")
        for depth in range(1, len(parts)):
            parent = self.roots.cgroup_dir("/".join(parts[:depth]))
            if not parent.exists():
                parent.mkdir()
                self.created_parents.append(parent)
            enabled = (parent / "cgroup.subtree_control").read_text().split()
            for controller in controllers:
                if controller not in enabled:
                    (parent / "cgroup.subtree_control").write_text(f"+{controller}")
        self.path.mkdir()
        self.write("memory.max", str(memory_max))
        # The scenarios are about memory that cannot go anywhere: no swap for
        # this cgroup even on a host that has swap.
        with contextlib.suppress(FileNotFoundError):
            self.write("memory.swap.max", "0")

    def write(self, filename: str, value: str) -> None:
        (self.path / filename).write_text(value)

    def read(self, filename: str) -> str:
        return (self.path / filename).read_text().strip()

    def join_command(self) -> str:
        return str(self.path / "cgroup.procs")

    def kill(self) -> None:
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            kill_file.write_text("1")
            return
        for pid in (self.path / "cgroup.procs").read_text().split():  # pre-5.14
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def remove(self, timeout_sec: float = 30.0) -> None:
        """Kill what is left and rmdir the cgroup, then the parents this run created."""
        if self.path.exists():
            self.kill()
            deadline = time.monotonic() + timeout_sec
            while True:
                try:
                    self.path.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        for parent in reversed(self.created_parents):
            with contextlib.suppress(OSError):
                parent.rmdir()
        self.created_parents.clear()


def evict_from_page_cache(paths: Sequence[Path]) -> None:
    """Drop the clean cached pages of these files only (not the node's whole cache):
    page cache is charged to whoever touches it first, so each run must read its
    files from the device again to have them charged to its own cgroup."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@contextlib.contextmanager
def tmpfs_mount(where: Path, size_mib: int) -> Any:
    """A tmpfs of our own for the run's shmem; unmounting it frees the shmem."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "remediator-bench", str(where)],
        check=True,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


class Sampler(threading.Thread):
    def __init__(self, cgroup: BenchCgroup, state: RunState, t0: float) -> None:
        super().__init__(daemon=True)
        self.cgroup = cgroup
        self.state = state
        self.t0 = t0
        self.stopped = threading.Event()

    def take(self) -> None:
        try:
            snapshot = read_cgroup_snapshot(self.cgroup.roots, self.cgroup.name)
        except (KernelError, KernelParseError):
            return
        sample = _sample(snapshot, time.monotonic() - self.t0)
        with self.state.lock:
            self.state.samples.append(sample)

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopped.is_set():
            self.take()
            next_at += SAMPLE_INTERVAL_SEC
            self.stopped.wait(max(0.0, next_at - time.monotonic()))


def _read_progress(stdout: Any, state: RunState, incarnation: int, ready: threading.Event) -> None:
    for raw in stdout:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if event.get("event") == "ready":
            ready.set()
            continue
        event["arrived"] = round(time.monotonic() - state.t0, 3)
        event["incarnation"] = incarnation
        with state.lock:
            state.progress.append(event)


class WorkloadProcess:
    """The workload process. After an OOM kill it stays dead (the kill is the finding, and one
    life per run keeps runs comparable), unless ``restart`` asks for systemd's
    Restart=on-failure: then a crash loop keeps stalling and being killed, each kill counted."""

    def __init__(
        self, argv: Sequence[str], cgroup: BenchCgroup, state: RunState, restart: bool = False
    ) -> None:
        self.argv = argv
        self.cgroup = cgroup
        self.state = state
        self.restart = restart
        self.exits: List[Dict[str, Any]] = []
        self.readers: List[threading.Thread] = []
        self.ready = threading.Event()
        self.released = False
        self.process = self._start()
        self.alive = True

    @property
    def t0(self) -> float:
        return self.state.t0

    def _start(self) -> subprocess.Popen[str]:
        process = _start_workload(self.argv, self.cgroup)
        reader = threading.Thread(
            target=_read_progress,
            args=(process.stdout, self.state, len(self.readers), self.ready),
            daemon=True,
        )
        reader.start()
        self.readers.append(reader)
        if self.released:  # a restart after an OOM kill starts at once
            self._go(process)
        return process

    def wait_ready(self, timeout_sec: float) -> bool:
        """The process has started Python and imported what it needs (its ``ready`` line): the
        window opens only then, so interpreter start-up under emulation (2-16 s measured on a
        loaded host) is not counted as the workload's time, nor the daemon's CPU meanwhile."""
        deadline = time.monotonic() + timeout_sec
        while not self.ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
        return True

    def release(self) -> None:
        self.released = True
        self._go(self.process)

    @staticmethod
    def _go(process: subprocess.Popen[str]) -> None:
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.write("go\n")
            process.stdin.close()

    def check(self, may_finish: bool = False) -> None:
        """Note an OOM kill (and restart if asked); any other exit means the workload is broken,
        unless ``may_finish`` (a tool that ended by itself at the end of its time: status 0)."""
        code = self.process.poll() if self.alive else None
        if code is None:
            return
        when = round(time.monotonic() - self.t0, 3)
        self.exits.append({"code": code, "at_sec": when})
        if may_finish and code == 0:
            self.alive = False
            return
        if code != -signal.SIGKILL:
            raise RuntimeError(f"the workload exited with status {code} after {when} s")
        if self.restart:
            self.process = self._start()
        else:
            self.alive = False

    def wait_finished(self, timeout_sec: float) -> None:
        """Give a tool that ends by itself the time to write its own summary."""
        if not self.alive:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout_sec)
        self.check(may_finish=True)

    def stop(self) -> None:
        self.cgroup.kill()
        self.process.wait()
        for reader in self.readers:
            reader.join(timeout=10)


def _tool_argv(scenario: Scenario, setup: RunSetup, anon_mib: int) -> List[str]:
    return [
        setup.python,
        "-m",
        "bench.efficacy.tools",
        "--anon-mib",
        str(anon_mib),
        "--anon-ramp-sec",
        str(scenario.anon_ramp_sec),
        "--duration-sec",
        "{duration}",
        "--wait-start",
    ]


def tool_workload_argv(scenario: Scenario, setup: RunSetup, run_dir: Path, duration_sec: float) -> List[str]:
    """fio or pgbench with the scenario's heap (tools.py); the tool is timed to the window."""
    argv = [
        part.replace("{duration}", f"{duration_sec:g}")
        for part in _tool_argv(scenario, setup, scenario.anon_mib)
    ]
    if scenario.kind is WorkloadKind.FIO_READ:
        argv += ["fio", "--mode", "read", "--files", *(str(p) for p in setup.data_files)]
        argv += ["--rate-mib-s", str(scenario.pace_mib_s)]
    elif scenario.kind is WorkloadKind.FIO_WRITE:
        argv += ["fio", "--mode", "write", "--files", str(setup.scratch_dir / "fio-write.bin")]
        argv += [
            "--rate-mib-s",
            str(scenario.pace_mib_s),
            "--size-mib",
            str(int(scenario.memory_max_mib * 1.5)),
        ]
    elif scenario.kind is WorkloadKind.PGBENCH:
        if setup.pg_data_dir is None:
            raise RuntimeError("the pgbench scenario needs the PostgreSQL data disk (vm.ensure_pg_image)")
        argv += [
            "pgbench",
            "--data-dir",
            str(setup.pg_data_dir),
            "--socket-dir",
            str(run_dir / "pg-socket"),
            "--log-dir",
            str(run_dir / "pg-log"),
            "--clients",
            str(PG_CLIENTS),
            "--shared-buffers-mib",
            str(PG_SHARED_BUFFERS_MIB),
        ]
    else:
        raise ValueError(f"not a tool workload: {scenario.kind}")
    return argv


def batch_argv(scenario: Scenario, setup: RunSetup) -> List[str]:
    """The neighbour's batch job: tar of a tree larger than the slice, no heap of its own."""
    if setup.tree_dir is None:
        raise RuntimeError("the neighbour scenario needs the tree on the data disk")
    argv = [
        part.replace("{duration}", f"{WORKLOAD_OVERRUN_SEC:g}") for part in _tool_argv(scenario, setup, 0)
    ]
    return [*argv, "tar", "--tree", str(setup.tree_dir)]


def workload_argv(scenario: Scenario, setup: RunSetup, tmpfs_dir: Optional[Path]) -> List[str]:
    argv = [
        setup.python,
        "-m",
        "bench.efficacy.workload",
        "--files",
        *(str(path) for path in setup.data_files),
        "--access",
        scenario.access,
        "--anon-mib",
        str(scenario.anon_mib),
        "--anon-ramp-sec",
        str(scenario.anon_ramp_sec),
        "--duration-sec",
        str(WORKLOAD_OVERRUN_SEC),
        "--wait-start",
    ]
    if tmpfs_dir is not None and scenario.tmpfs_mib > 0:
        argv += ["--tmpfs-dir", str(tmpfs_dir), "--tmpfs-mib", str(scenario.tmpfs_mib)]
    if scenario.pace_mib_s > 0:
        argv += ["--pace-mib-s", str(scenario.pace_mib_s)]
    if scenario.tmpfs_fill_sec > 0:
        argv += ["--tmpfs-fill-sec", str(scenario.tmpfs_fill_sec)]
    if scenario.dirty_mib > 0:
        argv += ["--dirty-file", str(setup.scratch_dir / "dirty.bin"), "--dirty-mib", str(scenario.dirty_mib)]
    return argv


def _start_workload(argv: Sequence[str], cgroup: BenchCgroup) -> subprocess.Popen[str]:
    procs = cgroup.join_command()

    def join() -> None:
        # Before exec: the workload is charged to the cgroup from its first allocation.
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))

    # preexec_fn with threads: safe here, join() only opens, writes and closes a file.
    return subprocess.Popen(
        list(argv),
        preexec_fn=join,  # noqa: PLW1509
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


class ReclaimLoop(threading.Thread):
    """The reference the issue measured: time-driven proactive reclaim, not pressure-driven.

    Writes ``chunk_bytes`` to memory.reclaim every ``interval_sec`` (EAGAIN, "took
    less", is expected and ignored). An optional series, to see what the daemon's
    reactive reclaim leaves on the table.
    """

    def __init__(self, cgroup: BenchCgroup, chunk_bytes: int, interval_sec: float) -> None:
        super().__init__(daemon=True)
        self.cgroup = cgroup
        self.chunk_bytes = chunk_bytes
        self.interval_sec = interval_sec
        self.stopped = threading.Event()
        self.writes = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval_sec):
            with contextlib.suppress(OSError):
                self.cgroup.write("memory.reclaim", str(self.chunk_bytes))
            self.writes += 1


def _relative_times(record: Mapping[str, Any], t0: float) -> Dict[str, Any]:
    """Record times as seconds since the workload started: when the record arrived and, for
    observations a trigger prompted, when the core decided (the daemon's CLOCK_MONOTONIC
    fields, comparable with ours in the same kernel)."""
    out = dict(record)
    out["_ARRIVED"] = round(float(record["_ARRIVED"]) - t0, 3)
    decided = record.get("REMEDIATOR_DECIDED_MONOTONIC_US")
    if decided is not None:
        with contextlib.suppress(ValueError):
            out["_DECIDED"] = round(int(decided) / 1e6 - t0, 3)
    return out


def _daemon_class() -> Any:
    # The VM guest library's Daemon: the real daemon as a child process with JSON
    # records and a real sd_notify socket (same code in the VM and natively).
    from tests.vm.guest.lib import Daemon

    return Daemon


def _wait_watched(daemon: Any, cgroups: Sequence[str]) -> bool:
    watched = RecordType.WATCH_STARTED.message_id
    for cgroup in cgroups:
        found = daemon.wait_for(
            lambda r, name=cgroup: r.get("MESSAGE_ID") == watched and r.get("REMEDIATOR_CGROUP") == name,
            DAEMON_WATCH_TIMEOUT_SEC,
        )
        if found is None:
            return False
    return True


def device_of(path: Path) -> str:
    """MAJ:MIN of the block device a path is on (io.max takes a whole disk, not a partition)."""
    st_dev = os.stat(path).st_dev
    return f"{os.major(st_dev)}:{os.minor(st_dev)}"


class Service:
    """One workload process in its own cgroup, with its samples and progress."""

    def __init__(self, cgroup: BenchCgroup, argv: Sequence[str], restart: bool) -> None:
        self.cgroup = cgroup
        self.argv = argv
        self.restart = restart
        self.state = RunState()
        self.workload: Optional[WorkloadProcess] = None
        self.sampler: Optional[Sampler] = None

    def spawn(self) -> None:
        self.workload = WorkloadProcess(self.argv, self.cgroup, self.state, self.restart)

    def result(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "cgroup": self.cgroup.name,
            "samples": self.state.samples,
            "progress": self.state.progress,
            "workload_exits": self.workload.exits if self.workload else [],
            "restart_on_oom_kill": self.restart,
        }
        out["metrics"] = summarize(out)
        return out


class Run:
    """One run of one series of one scenario (``run_one`` is the entry point).

    The scenario's cgroup (``setup.cgroup``) carries memory.max; the static, Senpai and
    sampling series act on it. The noisy neighbour's cgroup is the slice above its two
    services (the parent of ``setup.cgroup``), each service a child with its own samples.
    """

    def __init__(self, scenario: Scenario, series: str, duration_sec: float, setup: RunSetup) -> None:
        self.scenario = scenario
        self.series = series
        self.duration_sec = duration_sec
        self.setup = setup
        neighbour = scenario.kind is WorkloadKind.NEIGHBOUR
        limited = setup.cgroup.rsplit("/", 1)[0] if neighbour else setup.cgroup
        self.cgroup = BenchCgroup(setup.roots, limited)
        self.services: Dict[str, Service] = {}
        self.state = RunState()
        self.daemon: Any = None
        self.daemon_cpu_at_start = 0.0
        self.reclaim_loop: Optional[ReclaimLoop] = None
        self.senpai: Optional[SenpaiProcess] = None
        self.result: Dict[str, Any] = {
            "scenario": scenario.name,
            "series": series,
            "duration_sec": duration_sec,
            "cgroup": limited,
            "memory_max": scenario.memory_max_bytes,
            "restart_on_oom_kill": scenario.restart_on_oom_kill,
            "started_wall": time.time(),
        }

    def _watched_cgroups(self) -> List[str]:
        if self.scenario.kind is WorkloadKind.NEIGHBOUR:
            return [f"{self.cgroup.name}/{NEIGHBOUR_SENSITIVE}", f"{self.cgroup.name}/{NEIGHBOUR_BATCH}"]
        return [self.cgroup.name]

    def execute(self) -> Dict[str, Any]:
        if self.series == "senpai" and self.setup.senpai is None:
            raise RuntimeError("the senpai series has no usable senpai.py (see peers.senpai_status)")
        children = self._watched_cgroups() if self.scenario.kind is WorkloadKind.NEIGHBOUR else []
        for name in [*children, self.cgroup.name]:
            leftover = BenchCgroup(self.setup.roots, name)
            if leftover.path.exists():
                leftover.remove()  # left over from an interrupted run of ours
        run_dir = Path(
            tempfile.mkdtemp(prefix=f"run-{self.scenario.name}-{self.series}-", dir=self.setup.work_dir)
        )
        # PostgreSQL runs as its own user: its socket and pgbench's log are in here.
        run_dir.chmod(0o755)
        # Everything set up is undone in reverse order, also on an exception or Ctrl-C.
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(shutil.rmtree, run_dir, True)
            cleanup.callback(self.cgroup.remove)
            tmpfs_dir: Optional[Path] = None
            if self.scenario.tmpfs_mib > 0:
                tmpfs_dir = cleanup.enter_context(
                    tmpfs_mount(run_dir / "tmpfs", self.scenario.tmpfs_mib + 64)
                )
            evict_from_page_cache(self.setup.data_files)
            controllers = ("memory", "io") if self.scenario.write_bps_limit else ("memory",)
            self.cgroup.create(self.scenario.memory_max_bytes, controllers)
            if self.scenario.write_bps_limit:
                limit = f"{device_of(self.setup.scratch_dir)} wbps={self.scenario.write_bps_limit}"
                self.cgroup.write("io.max", limit)
                self.result["io_max"] = limit
            self._create_services(run_dir, tmpfs_dir, cleanup)
            self._prepare_series(run_dir, cleanup)
            self._observe()
        self.result["samples"] = self.state.samples
        self.result["progress"] = self.state.progress
        self.result["metrics"] = summarize(self.result)
        return self.result

    def _create_services(
        self, run_dir: Path, tmpfs_dir: Optional[Path], cleanup: contextlib.ExitStack
    ) -> None:
        kind = self.scenario.kind
        restart = self.scenario.restart_on_oom_kill
        if kind is WorkloadKind.NEIGHBOUR:
            # The slice holds the limit; each service is a child without one of its own.
            (self.cgroup.path / "cgroup.subtree_control").write_text("+memory")
            for name, argv in (
                (NEIGHBOUR_SENSITIVE, workload_argv(self.scenario, self.setup, None)),
                (NEIGHBOUR_BATCH, batch_argv(self.scenario, self.setup)),
            ):
                child = BenchCgroup(self.setup.roots, f"{self.cgroup.name}/{name}")
                child.path.mkdir()
                cleanup.callback(child.remove)
                self.services[name] = Service(child, argv, restart)
            return
        if kind is WorkloadKind.SCAN:
            argv = workload_argv(self.scenario, self.setup, tmpfs_dir)
        else:
            argv = tool_workload_argv(self.scenario, self.setup, run_dir, self.duration_sec)
        self.services["workload"] = Service(self.cgroup, argv, restart)

    def _prepare_series(self, run_dir: Path, cleanup: contextlib.ExitStack) -> None:
        if self.series in STATIC_GRID:
            high = self.scenario.static_high_bytes(STATIC_GRID[self.series])
            self.cgroup.write("memory.high", str(high))
            self.result["static_high"] = high
        elif self.series == "senpai":
            assert self.setup.senpai is not None
            # Started before the workload, as a node agent is, on the cgroup with memory.max.
            self.senpai = SenpaiProcess(
                self.setup.senpai, self.cgroup.path, run_dir / "senpai.log", python=self.setup.python
            )
            cleanup.callback(self.senpai.stop)
        elif self.series in ("remediator", "dry-run"):
            self.daemon = _daemon_class()(
                workdir=run_dir / "daemon",
                policies=self.setup.policies,
                dry_run=self.series == "dry-run",
                settings={"rescan_interval_sec": RESCAN_INTERVAL_SEC},
            )
            cleanup.callback(self.daemon.stop)
            self.daemon.start(ready_timeout_sec=DAEMON_READY_TIMEOUT_SEC)
            self.result["daemon_watching"] = _wait_watched(self.daemon, self._watched_cgroups())
            self.daemon_cpu_at_start = self.daemon.cpu_seconds()
        elif self.series == "reclaim-loop":
            self.reclaim_loop = ReclaimLoop(self.cgroup, RECLAIM_LOOP_BYTES, RECLAIM_LOOP_INTERVAL_SEC)
            cleanup.callback(self.reclaim_loop.stopped.set)

    def _open_window(self) -> Tuple[float, Sampler]:
        """Start the workloads, wait until each is ready, then take the baseline and release them."""
        own_sampler = self.scenario.kind is WorkloadKind.NEIGHBOUR
        for service in self.services.values():
            if not own_sampler:
                service.state = self.state  # one cgroup: the service's progress is the run's
            service.spawn()
        for service in self.services.values():
            assert service.workload is not None
            if not service.workload.wait_ready(WORKLOAD_READY_TIMEOUT_SEC):
                status = service.workload.process.poll()
                raise RuntimeError(f"the workload in {service.cgroup.name} did not start (status {status})")
        t0 = time.monotonic()
        sampler = Sampler(self.cgroup, self.state, t0)
        self.state.t0 = t0
        sampler.take()  # the baseline, right before the workload starts
        for service in self.services.values():
            service.state.t0 = t0
            if own_sampler:
                service.sampler = Sampler(service.cgroup, service.state, t0)
                service.sampler.take()
        for service in self.services.values():
            assert service.workload is not None
            service.workload.release()
            if service.sampler is not None:
                service.sampler.start()
        sampler.start()
        return t0, sampler

    def _observe(self) -> None:
        """Start the workload(s), sample for the window, then end them and collect the daemon's side."""
        t0, sampler = self._open_window()
        if self.reclaim_loop is not None:
            self.reclaim_loop.start()
        finishes = self.scenario.kind in (WorkloadKind.FIO_READ, WorkloadKind.FIO_WRITE, WorkloadKind.PGBENCH)
        workloads = [s.workload for s in self.services.values() if s.workload is not None]
        try:
            while time.monotonic() - t0 < self.duration_sec:
                for workload in workloads:
                    workload.check(may_finish=finishes)
                time.sleep(0.1)
            sampler.stopped.set()
            for service in self.services.values():
                if service.sampler is not None:
                    service.sampler.stopped.set()
            sampler.join()
            sampler.take()  # the end of the window
            for service in self.services.values():
                if service.sampler is not None:
                    service.sampler.join()
                    service.sampler.take()
            if self.reclaim_loop is not None:
                self.reclaim_loop.stopped.set()
                self.reclaim_loop.join()
                self.result["reclaim_loop_writes"] = self.reclaim_loop.writes
            if self.daemon is not None:
                self.result["daemon_cpu_sec"] = round(self.daemon.cpu_seconds() - self.daemon_cpu_at_start, 3)
            if finishes:
                for workload in workloads:
                    workload.wait_finished(RESULT_WAIT_SEC)
        finally:
            sampler.stopped.set()
            for workload in workloads:
                workload.stop()
            self.result["workload_exits"] = [exit for w in workloads for exit in w.exits]
        if self.senpai is not None:
            self.result["senpai"] = self.senpai.stop()
        if self.daemon is not None:
            # SIGTERM: the daemon restores what it changed before it exits.
            self.result["daemon_exit_code"] = self.daemon.stop()
            self.result["records"] = [_relative_times(record, t0) for record in self.daemon.snapshot()]
        self.result["memory_high_after_run"] = self.cgroup.read("memory.high")
        if self.scenario.kind is WorkloadKind.NEIGHBOUR:
            self.result["services"] = {name: service.result() for name, service in self.services.items()}


def run_one(scenario: Scenario, series: str, duration_sec: float, setup: RunSetup) -> Dict[str, Any]:
    """One run of one series of one scenario; returns its JSON-ready result."""
    return Run(scenario, series, duration_sec, setup).execute()
