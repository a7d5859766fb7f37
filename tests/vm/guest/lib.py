"""Guest-side helpers: cgroups under the VM's real cgroup2 root, workloads, and the daemon as a process.

Runs only inside the VM (it writes /sys/fs/cgroup and /proc/sys/vm, which is
what the VM is for). Scenario modules import it and write a JSON report to
$VM_OUT; the host-side pytest asserts on that report.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

CGROUP_ROOT = Path("/sys/fs/cgroup")
OUT_DIR = Path(os.environ.get("VM_OUT", "/out"))
PAGE = 4096


def in_vm_or_die() -> None:
    # A guard: these helpers write cgroup and sysctl files. Never on the host.
    if os.environ.get("VM_OUT") is None or not (CGROUP_ROOT / "cgroup.subtree_control").exists():
        sys.exit("tests.vm.guest runs only inside the test VM")


def write_report(name: str, report: Mapping[str, Any]) -> None:
    (OUT_DIR / f"{name}.json").write_text(json.dumps(report, indent=2, sort_keys=True))


# ---- cgroups ---------------------------------------------------------------------------


def cgroup_dir(name: str) -> Path:
    return CGROUP_ROOT / name


def make_cgroup(name: str, **files: str) -> Path:
    """Create a cgroup (and its parents, with +memory for their children) and write ``files``
    (``memory_max="256M"`` writes memory.max)."""
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = CGROUP_ROOT.joinpath(*parts[:depth])
        parent.mkdir(exist_ok=True)
        (parent / "cgroup.subtree_control").write_text("+memory +cpu +io +pids")
    d = CGROUP_ROOT / name
    d.mkdir(exist_ok=True)
    for key, value in files.items():
        (d / key.replace("_", ".", 1)).write_text(value)
    return d


def read(name: str, filename: str) -> str:
    return (cgroup_dir(name) / filename).read_text().strip()


def write(name: str, filename: str, value: str) -> None:
    (cgroup_dir(name) / filename).write_text(value)


def memory_stat(name: str) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for line in read(name, "memory.stat").splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def memory_events(name: str) -> Dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in read(name, "memory.events").splitlines())}


def pressure_totals(path: Path) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for line in path.read_text().splitlines():
        kind, *fields = line.split()
        for f in fields:
            k, _, v = f.partition("=")
            if k == "total":
                out[kind] = int(v)
    return out


def cgroup_pressure_totals(name: str) -> Dict[str, int]:
    return pressure_totals(cgroup_dir(name) / "memory.pressure")


def kill_cgroup(name: str) -> None:
    d = cgroup_dir(name)
    if (d / "cgroup.kill").exists():
        (d / "cgroup.kill").write_text("1")
    else:  # pre-5.14
        for pid in (d / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def remove_cgroup(name: str, timeout_sec: float = 10.0) -> None:
    """Kill everything in the cgroup (and below), then rmdir bottom-up."""
    d = cgroup_dir(name)
    if not d.exists():
        return
    kill_cgroup(name)
    children = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    deadline = time.monotonic() + timeout_sec
    for path in [*children, d]:
        while True:
            try:
                path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def drop_caches() -> None:
    """Inside the VM only: page cache belongs to whoever touches it first after this."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


# ---- workloads --------------------------------------------------------------------------


def run_in(name: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a member of the cgroup from its very first allocation."""
    procs = str(cgroup_dir(name) / "cgroup.procs")

    def join() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return subprocess.Popen(list(argv), preexec_fn=join, **popen)  # noqa: PLW1509 - must run pre-exec


def anon_hog(name: str, mib: int, hold_sec: float = 3600.0, step_mib: int = 8) -> subprocess.Popen[bytes]:
    """Anonymous memory that stays: allocated in steps, every page touched, then held."""
    code = (
        "import sys,time\n"
        "chunks=[]\n"
        f"for _ in range({mib} // {step_mib}):\n"
        f"    chunks.append(bytearray(b'\\x01') * ({step_mib} << 20))\n"
        "sys.stdout.write('allocated\\n'); sys.stdout.flush()\n"
        f"time.sleep({hold_sec})\n"
    )
    return run_in(name, [sys.executable, "-c", code], stdout=subprocess.PIPE)


def mount_drive(device: str, mount_point: Path) -> Path:
    """Mount an ext4 drive (``harness.make_ext4_image``, attached with ``drives=[...]``) read-only:
    real, clean page cache for the files on it, and nothing ever dirty."""
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "ext4", "-o", "ro", device, str(mount_point)], check=True)
    return mount_point


def read_file_into_cache(name: str, path: Path) -> None:
    """Read a file from a process in the cgroup so its clean pages are charged there, then exit."""
    proc = run_in(name, ["cat", str(path)], stdout=subprocess.DEVNULL)
    proc.wait(timeout=300)


def tmpfs_fill(name: str, directory: Path, mib: int) -> None:
    """Write ``mib`` MiB into a tmpfs file from the cgroup: shmem, not reclaimable without swap."""
    argv = ["dd", "if=/dev/zero", f"of={directory}/fill", "bs=1M", f"count={mib}", "status=none"]
    proc = run_in(name, argv)
    proc.wait(timeout=300)


def read_file_in_loop(name: str, path: Path) -> subprocess.Popen[bytes]:
    """Read ``path`` again and again from the cgroup, until the cgroup is killed (``kill_cgroup``).

    With the cgroup's memory.max below the file's size, every pass reclaims the
    cgroup's own page cache at its limit: memory stall in memory.pressure (and in
    its ancestors'), ``max`` in memory.events, never ``high``. Use a file on an
    ext4 drive: 9p and tmpfs do not give real page cache."""
    return run_in(name, ["sh", "-c", 'while :; do cat "$1" > /dev/null; done', "read-loop", str(path)])


# ---- the daemon -------------------------------------------------------------------------


@dataclass
class Daemon:
    """The real daemon as a child process: JSON records on stderr, sd_notify on a real socket."""

    workdir: Path
    policies: Mapping[str, str]
    dry_run: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)
    records: List[Dict[str, Any]] = field(default_factory=list)
    notifications: List[str] = field(default_factory=list)
    proc: Optional[subprocess.Popen[bytes]] = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: Optional[threading.Thread] = None
    _notify: Optional[socket.socket] = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        policies_dir = self.workdir / "policies.d"
        policies_dir.mkdir(exist_ok=True)
        for old in policies_dir.glob("*.yaml"):
            old.unlink()
        for name, text in self.policies.items():
            (policies_dir / f"{name}.yaml").write_text(text)
        config = {
            "policies_dir": str(policies_dir),
            "state_file": str(self.workdir / "run" / "state.json"),
            "dry_run": self.dry_run,
            "log_target": "json",
            # The light VM has no node_exporter: its default textfile directory is absent (the metrics
            # are scraped for real in the full VM, tests/packaging/test_installed_debian12.py).
            "metrics_textfile": "",
            **self.settings,
        }
        (self.workdir / "remediator.yaml").write_text(json.dumps(config))

    @property
    def state_file(self) -> Path:
        return self.workdir / "run" / "state.json"

    def start(self, ready_timeout_sec: float = 60.0) -> None:
        sock_path = self.workdir / "notify.sock"
        if sock_path.exists():
            sock_path.unlink()
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(sock_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remediator", "--config", str(self.workdir / "remediator.yaml"), "run"],
            stderr=subprocess.PIPE,
            env=env,
        )
        self._reader = threading.Thread(target=self._read_records, daemon=True)
        self._reader.start()
        if not self.wait_notification("READY=1", ready_timeout_sec):
            raise RuntimeError(f"daemon not ready in {ready_timeout_sec} s; records: {self.records[-5:]}")

    def _read_records(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                doc = {"MESSAGE": line, "NOT_JSON": "1"}
            doc["_ARRIVED"] = time.monotonic()
            with self._lock:
                self.records.append(doc)

    def wait_notification(self, needle: str, timeout_sec: float) -> bool:
        assert self._notify is not None
        deadline = time.monotonic() + timeout_sec
        while time.monotonic() < deadline:
            if any(needle in n for n in self.notifications):
                return True
            self._notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self._notify.recv(4096).decode()
            except socket.timeout:
                break
            self.notifications.append(data)
        return any(needle in n for n in self.notifications)

    def snapshot(self) -> List[Dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def find(self, predicate: Callable[[Dict[str, Any]], bool]) -> List[Dict[str, Any]]:
        return [r for r in self.snapshot() if predicate(r)]

    def wait_for(
        self, predicate: Callable[[Dict[str, Any]], bool], timeout_sec: float
    ) -> Optional[Dict[str, Any]]:
        deadline = time.monotonic() + timeout_sec
        while time.monotonic() < deadline:
            found = self.find(predicate)
            if found:
                return found[0]
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        found = self.find(predicate)
        return found[0] if found else None

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def voluntary_switches(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
        return 0

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout_sec: float = 30.0) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_sec)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._notify is not None:
            self._notify.close()
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._notify is not None:
            self._notify.close()


def by_id(message_id: str) -> Callable[[Dict[str, Any]], bool]:
    return lambda r: r.get("MESSAGE_ID") == message_id


def policy_yaml(
    include: Sequence[str],
    actions: str,
    *,
    pressure: str = "full",
    stall_ms: int = 100,
    window_ms: int = 2000,
    verify_sec: float = 4,
    calm_sec: float = 8,
    conditions: str = "",
) -> str:
    """A policy for a scenario: ``actions`` is the YAML of the ladder's list items (indented 2)."""
    inc = ", ".join(json.dumps(i) for i in include)
    return (
        f"target: {{kind: cgroups, include: [{inc}]}}\n"
        f"trigger: {{pressure: {pressure}, stall_ms: {stall_ms}, window_ms: {window_ms}}}\n"
        + (f"conditions:\n{conditions}" if conditions else "")
        + f"actions:\n{actions}"
        f"verify_sec: {verify_sec}\n"
        f"rollback: {{calm_sec: {calm_sec}, restore_on_exit: true}}\n"
    )
