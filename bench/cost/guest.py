"""The benchmark's guest side: runs inside the light VM, writes one JSON report to $VM_OUT.

    python -m bench.cost.guest scale --n 1000 --idle-sec 60 --out /out/scale-1000.json
    python -m bench.cost.guest reaction --n 1000 --events 30 --out /out/reaction-1000.json

scale: N cgroups ``bench/w0000..`` with one busybox sleep each; for remediator
(2 s windows) start-up to READY=1, RSS and VmHWM, CPU and wake-ups over an idle
window, the time until 100 cgroups created after start-up are all watched,
psimon threads, stop time; the same with sub-2 s windows (start-up, psimon,
RSS, stop); the same for the 1 s polling baseline (no psimon).

reaction: N-1 idle cgroups plus ``bench/event/w`` (memory.max 512 MiB) under
``bench/event`` (memory.high 32 MiB, set by the bench). Each event starts an
anonymous-memory hog in ``bench/event/w``: above its parent's memory.high,
without swap, the kernel can only throttle it, which is a ``full`` stall. The
policy's one rung sets the child's memory.high to 90 % of its memory.max (a
cheap write above usage); the daemon rolls it back after the calm. A witness
(bench.cost.witness) with the same trigger timestamps the kernel's event.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from bench.cost import fleet
from bench.cost.procstat import ProcessCost, count_kernel_threads, read_process_cost, system_busy_sec
from remediator.records import RecordType
from tests.vm.guest import lib

PARENT = "bench"
WATCH_GLOB = f"{PARENT}/w*"
EVENT_PARENT = f"{PARENT}/event"
EVENT_CGROUP = f"{EVENT_PARENT}/w"
EVENT_PARENT_HIGH = 32 << 20
EVENT_MAX = 512 << 20
HOG_MIB = 96
PICKUP_PREFIX = "wpick"
PROBE_NAME = "wprobe"
# The policy's trigger, and the same share of time for sub-2 s windows.
WINDOW_2S = (100, 2000)
WINDOW_SUB2S = (50, 1000)
RESCAN_INTERVAL_SEC = 10.0  # the shipped default; the pick-up bound is built on it
VERIFY_SEC = 2.0
CALM_SEC = 2.0
SETTLE_SEC = 3.0
WAIT_SEC = 120.0

Json = Dict[str, Any]


def _now() -> float:
    return time.monotonic()


def policy_text(stall_ms: int, window_ms: int, include: Sequence[str]) -> str:
    actions = (
        "  - kind: memory_high\n    relative_to: max\n    fraction: 0.9\n"
        "    cooldown_sec: 0\n    max_per_hour: 1000\n"
    )
    return lib.policy_yaml(
        include, actions, stall_ms=stall_ms, window_ms=window_ms, verify_sec=VERIFY_SEC, calm_sec=CALM_SEC
    )


def _cost_json(cost: ProcessCost) -> Json:
    return asdict(cost)


class JsonLinesProcess:
    """A child that prints one JSON object per line; lines are kept with their arrival time."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE)
        self.lines: List[Json] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            doc["_arrived"] = _now()
            with self._lock:
                self.lines.append(doc)

    def find(self, predicate: Callable[[Json], bool]) -> List[Json]:
        with self._lock:
            return [d for d in self.lines if predicate(d)]

    def wait_for(self, predicate: Callable[[Json], bool], timeout_sec: float) -> Optional[Json]:
        deadline = _now() + timeout_sec
        while True:
            found = self.find(predicate)
            if found:
                return found[0]
            if _now() > deadline or self.proc.poll() is not None:
                return None
            time.sleep(0.02)

    def stop(self, timeout_sec: float = 600.0) -> float:
        started = _now()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_sec)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        return _now() - started


# ---- scale ---------------------------------------------------------------------------------


def _watched(cgroup: str) -> Callable[[Json], bool]:
    started = RecordType.WATCH_STARTED.message_id
    return lambda r: r.get("MESSAGE_ID") == started and r.get("REMEDIATOR_CGROUP") == cgroup


def _idle(pid: int, idle_sec: float) -> Json:
    before, busy_before, started = read_process_cost(pid), system_busy_sec(), _now()
    time.sleep(idle_sec)
    after, busy_after, elapsed = read_process_cost(pid), system_busy_sec(), _now() - started
    return {
        "seconds": elapsed,
        "cpu_sec": after.cpu_sec - before.cpu_sec,
        "voluntary_switches": after.voluntary_switches - before.voluntary_switches,
        "involuntary_switches": after.involuntary_switches - before.involuntary_switches,
        "system_busy_sec": busy_after - busy_before,
        "rss_kib": after.rss_kib,
        "peak_rss_kib": after.peak_rss_kib,
    }


def _pickup(
    pickup_count: int, is_watched: Callable[[str], Optional[float]], probe_timeout_sec: float
) -> Json:
    """Create a probe cgroup, wait until it is watched (a rescan just happened), then create
    ``pickup_count`` cgroups at once and time until all are watched: the worst case of the
    rescan phase, which is what a bound must cover."""
    fleet.create(PARENT, [PROBE_NAME], with_process=False)
    deadline = _now() + probe_timeout_sec
    while is_watched(f"{PARENT}/{PROBE_NAME}") is None and _now() < deadline:
        time.sleep(0.02)
    names = fleet.numbered(PICKUP_PREFIX, pickup_count)
    fleet.create(PARENT, names, with_process=False)
    created = _now()
    fleet.start_sleepers([lib.cgroup_dir(f"{PARENT}/{n}") for n in names])
    arrivals: List[float] = []
    deadline = created + probe_timeout_sec
    pending = list(names)
    while pending and _now() < deadline:
        still = []
        for name in pending:
            at = is_watched(f"{PARENT}/{name}")
            if at is None:
                still.append(name)
            else:
                arrivals.append(at)
        pending = still
        if pending:
            time.sleep(0.05)
    result: Json = {"count": pickup_count, "watched": len(arrivals), "complete": not pending}
    if arrivals:
        result["first_sec"] = min(arrivals) - created
        result["all_sec"] = max(arrivals) - created
    fleet.remove(PARENT, [*names, PROBE_NAME])
    return result


def run_remediator(
    workdir: Path, n: int, window: Sequence[int], idle_sec: float, pickup_count: int, full: bool
) -> Json:
    stall_ms, window_ms = window
    daemon = lib.Daemon(
        workdir,
        {"bench": policy_text(stall_ms, window_ms, [WATCH_GLOB])},
        settings={"rescan_interval_sec": RESCAN_INTERVAL_SEC},
    )
    out: Json = {"window_ms": window_ms, "stall_ms": stall_ms}
    started = _now()
    daemon.start(ready_timeout_sec=1800)
    out["ready_sec"] = _now() - started
    assert daemon.proc is not None
    watched = daemon.find(lib.by_id(RecordType.WATCH_STARTED.message_id))
    out["watched_at_ready"] = len(watched)
    out["psimon_threads"] = count_kernel_threads()
    out["at_ready"] = _cost_json(read_process_cost(daemon.proc.pid))
    if full:
        time.sleep(SETTLE_SEC)
        out["idle"] = _idle(daemon.proc.pid, idle_sec)

        def is_watched(cgroup: str) -> Optional[float]:
            found = daemon.find(_watched(cgroup))
            return float(found[0]["_ARRIVED"]) if found else None

        out["pickup"] = _pickup(pickup_count, is_watched, 3 * RESCAN_INTERVAL_SEC + 600)
        out["after_pickup"] = _cost_json(read_process_cost(daemon.proc.pid))
    stopping = _now()
    out["exit_code"] = daemon.stop(timeout_sec=1800)
    out["stop_sec"] = _now() - stopping
    out["psimon_threads_after_stop"] = count_kernel_threads()
    return out


def run_baseline(n: int, idle_sec: float, pickup_count: int) -> Json:
    started = _now()
    poller = JsonLinesProcess([sys.executable, "-m", "bench.cost.baseline", "--glob", WATCH_GLOB])
    ready = poller.wait_for(lambda d: d["event"] == "ready", 1800)
    out: Json = {"ready_sec": _now() - started, "watched_at_ready": ready["watched"] if ready else None}
    out["psimon_threads"] = count_kernel_threads()
    time.sleep(SETTLE_SEC)
    out["idle"] = _idle(poller.proc.pid, idle_sec)

    def is_watched(cgroup: str) -> Optional[float]:
        found = poller.find(lambda d: d["event"] == "watch" and d["cgroup"] == cgroup)
        return float(found[0]["_arrived"]) if found else None

    out["pickup"] = _pickup(pickup_count, is_watched, 3 * RESCAN_INTERVAL_SEC + 600)
    out["stop_sec"] = poller.stop()
    return out


def warm_up() -> float:
    """Run the daemon once with no policies, so the measured start-ups read the Python
    modules from the guest's page cache, as on a machine where they are on a local disk
    (the first read crosses the 9p share to the host). Returns the cold start-up's time."""
    workdir = Path("/tmp/bench-cost/warm-up")
    daemon = lib.Daemon(workdir, {})
    started = _now()
    subprocess.run(
        [sys.executable, "-m", "remediator", "--config", str(workdir / "remediator.yaml"), "run", "--once"],
        check=False,
        stderr=subprocess.DEVNULL,
    )
    del daemon
    return _now() - started


def scale(n: int, idle_sec: float, pickup_count: int) -> Json:
    names = fleet.numbered("w", n)
    started = _now()
    fleet.create(PARENT, names)
    report: Json = {"n": n, "setup_sec": _now() - started, "psimon_threads_before": count_kernel_threads()}
    report["cold_run_once_sec"] = warm_up()
    work = Path("/tmp/bench-cost")
    report["remediator"] = run_remediator(work / "r2s", n, WINDOW_2S, idle_sec, pickup_count, full=True)
    report["remediator_sub2s"] = run_remediator(work / "rsub", n, WINDOW_SUB2S, idle_sec, 0, full=False)
    report["baseline"] = run_baseline(n, idle_sec, pickup_count)
    return report


# ---- reaction ------------------------------------------------------------------------------


def _memory_high(cgroup: str) -> str:
    return lib.read(cgroup, "memory.high")


def _wait_until(predicate: Callable[[], bool], timeout_sec: float) -> bool:
    deadline = _now() + timeout_sec
    while not predicate():
        if _now() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kernel_write_sec(cgroup: str, value: str) -> float:
    """The time the kernel takes to write ``value`` to memory.high, as it stands now."""
    path = lib.cgroup_dir(cgroup) / "memory.high"
    fd = os.open(path, os.O_WRONLY)
    try:
        started = time.perf_counter()
        os.write(fd, value.encode("ascii"))
        return time.perf_counter() - started
    finally:
        os.close(fd)


def sustained_anon_hog(cgroup: str, mib: int) -> subprocess.Popen[bytes]:
    """Anonymous memory that keeps being allocated: a sliding window of ``mib`` MiB of 8 MiB
    anonymous mappings, the oldest unmapped as a new one is touched. Above memory.high every new
    mapping is charged and throttled again, so the stall lasts until the hog is killed. (A hog
    that allocates once and holds stalls for a burst of a second or two, which a 1 s poller can
    miss entirely; malloc would reuse freed heap pages that are already charged.)"""
    code = (
        "import mmap\n"
        "data = b'\\x01' * (8 << 20)\n"
        "chunks = []\n"
        "while True:\n"
        "    chunk = mmap.mmap(-1, len(data))\n"
        "    chunk.write(data)\n"
        "    chunks.append(chunk)\n"
        f"    if len(chunks) > {mib} // 8:\n"
        "        chunks.pop(0).close()\n"
    )
    return lib.run_in(cgroup, [sys.executable, "-c", code])


def _us_field(record: Json, name: str) -> Optional[float]:
    value = record.get(f"REMEDIATOR_{name}")
    return int(value) / 1e6 if value is not None else None


def _one_event(
    index: int,
    witness: JsonLinesProcess,
    wait_action: Callable[[float], Optional[Json]],
    after_action: Callable[[Json], Json],
) -> Json:
    event: Json = {"index": index}
    hog_started = _now()
    hog = sustained_anon_hog(EVENT_CGROUP, HOG_MIB)
    try:
        action = wait_action(hog_started)
        if action is not None:
            value = _memory_high(EVENT_CGROUP)
            event["kernel_write_sec"] = _kernel_write_sec(EVENT_CGROUP, value) if value != "max" else None
    finally:
        hog.kill()
        hog.wait()
    fired = witness.wait_for(lambda d: d["event"] == "fired" and d["t"] >= hog_started, 5)
    event["hog_started"] = hog_started
    event["kernel_event"] = fired["t"] if fired else None
    if action is None:
        event["error"] = "no action within the time limit"
        return event
    event.update(after_action(action))
    return event


def run_reaction(n: int, events: int, mode: str) -> Json:
    fillers = fleet.numbered("w", max(0, n - 1))
    # Both modes run in one VM: the second finds the fleet the first made.
    if fillers and not lib.cgroup_dir(f"{PARENT}/{fillers[-1]}").exists():
        fleet.create(PARENT, fillers)
    lib.make_cgroup(EVENT_CGROUP, memory_max=str(EVENT_MAX))
    lib.write(EVENT_PARENT, "memory.high", str(EVENT_PARENT_HIGH))
    stall_ms, window_ms = WINDOW_2S
    witness = JsonLinesProcess(
        [
            sys.executable,
            "-m",
            "bench.cost.witness",
            str(lib.cgroup_dir(EVENT_CGROUP) / "memory.pressure"),
            f"full {stall_ms * 1000} {window_ms * 1000}",
        ]
    )
    armed = witness.wait_for(lambda d: d["event"] == "armed", 60)
    report: Json = {"n": n, "mode": mode, "witness_realtime": bool(armed and armed.get("realtime"))}
    report["cold_run_once_sec"] = warm_up()
    results: List[Json] = []
    applied_id = RecordType.ACTION_APPLIED.message_id
    rolled_id = RecordType.ROLLED_BACK.message_id
    high_value = str((int(EVENT_MAX * 0.9) // lib.PAGE) * lib.PAGE)
    if mode == "remediator":
        daemon = lib.Daemon(
            Path("/tmp/bench-cost/reaction"),
            {"bench": policy_text(stall_ms, window_ms, [WATCH_GLOB, EVENT_CGROUP])},
            settings={"rescan_interval_sec": RESCAN_INTERVAL_SEC},
        )
        daemon.start(ready_timeout_sec=1800)

        def wait_action(since: float) -> Optional[Json]:
            return daemon.wait_for(
                lambda r: (
                    r.get("MESSAGE_ID") == applied_id
                    and r.get("REMEDIATOR_CGROUP") == EVENT_CGROUP
                    and r["_ARRIVED"] > since
                ),
                WAIT_SEC,
            )

        since_last_action = [0.0]

        def after_action(record: Json) -> Json:
            fields = {
                "result": record.get("REMEDIATOR_RESULT"),
                "woken": _us_field(record, "WOKEN_MONOTONIC_US"),
                "decided": _us_field(record, "DECIDED_MONOTONIC_US"),
                "written": _us_field(record, "WRITTEN_MONOTONIC_US"),
                "record_arrived": record["_ARRIVED"],
                # What the daemon said about the event cgroup since the previous action: a late
                # action's story (a decline, a second event) is read from here.
                "records": [
                    {
                        "arrived": r["_ARRIVED"],
                        "woken": _us_field(r, "WOKEN_MONOTONIC_US"),
                        "message_id": r.get("MESSAGE_ID"),
                        "message": str(r.get("MESSAGE", ""))[:300],
                    }
                    for r in list(daemon.records)
                    if r.get("REMEDIATOR_CGROUP") == EVENT_CGROUP
                    and since_last_action[0] < r["_ARRIVED"] <= record["_ARRIVED"]
                ],
            }
            since_last_action[0] = record["_ARRIVED"]
            rolled = daemon.wait_for(
                lambda r: (
                    r.get("MESSAGE_ID") == rolled_id
                    and r.get("REMEDIATOR_CGROUP") == EVENT_CGROUP
                    and r["_ARRIVED"] > record["_ARRIVED"]
                ),
                WAIT_SEC,
            )
            fields["rolled_back"] = rolled is not None
            _wait_until(lambda: _memory_high(EVENT_CGROUP) == "max", 30)
            return fields

        for index in range(events):
            results.append(_one_event(index, witness, wait_action, after_action))
        report["daemon_exit_code"] = daemon.stop(timeout_sec=1800)
    else:
        poller = JsonLinesProcess(
            [
                sys.executable,
                "-m",
                "bench.cost.baseline",
                "--glob",
                WATCH_GLOB,
                "--glob",
                EVENT_CGROUP,
                "--share",
                str(stall_ms / window_ms),
                "--react",
                EVENT_CGROUP,
                "--react-high",
                high_value,
            ]
        )
        poller.wait_for(lambda d: d["event"] == "ready", 1800)

        def wait_action_baseline(since: float) -> Optional[Json]:
            return poller.wait_for(lambda d: d["event"] == "detected" and d["t"] > since, WAIT_SEC)

        def after_action_baseline(line: Json) -> Json:
            fields = {"decided": line["t"], "written": line["written"], "record_arrived": line["_arrived"]}
            lib.write(EVENT_CGROUP, "memory.high", "max")
            time.sleep(CALM_SEC + 1.0)  # a calm tick, so the next detection is a new episode
            return fields

        for index in range(events):
            results.append(_one_event(index, witness, wait_action_baseline, after_action_baseline))
        poller.stop()
    witness.stop()
    report["events"] = results
    return report


# ---- main ----------------------------------------------------------------------------------


def machine() -> Json:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    return {
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "mem_total_kib": int(meminfo[1]),
        "python": platform.python_version(),
        "cmdline": Path("/proc/cmdline").read_text().strip(),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="remediator cost benchmark, guest side")
    sub = parser.add_subparsers(dest="what", required=True)
    scale_args = sub.add_parser("scale")
    scale_args.add_argument("--n", type=int, required=True)
    scale_args.add_argument("--idle-sec", type=float, default=60.0)
    scale_args.add_argument("--pickup", type=int, default=100)
    scale_args.add_argument("--out", type=Path, required=True)
    reaction_args = sub.add_parser("reaction")
    reaction_args.add_argument("--n", type=int, required=True)
    reaction_args.add_argument("--events", type=int, default=30)
    reaction_args.add_argument("--mode", choices=("remediator", "baseline", "both"), default="both")
    reaction_args.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    lib.in_vm_or_die()
    started = _now()
    report: Json = {"machine": machine(), "argv": shlex.join(sys.argv)}
    if args.what == "scale":
        report["scale"] = scale(args.n, args.idle_sec, args.pickup)
    else:
        modes = ("remediator", "baseline") if args.mode == "both" else (args.mode,)
        report["reaction"] = {}
        for mode in modes:
            report["reaction"][mode] = run_reaction(args.n, args.events, mode)
    report["guest_elapsed_sec"] = _now() - started
    args.out.write_text(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
