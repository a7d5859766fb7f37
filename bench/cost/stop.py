"""The stop series, guest side: how long the daemon takes to stop at N watched cgroups, with a
value of its own to restore, and what closing N trigger fds costs from 1..P threads.

    python -m bench.cost.stop --n 2000 --close-threads 1,4,16,32,64,256 --out /out/stop-2000.json

Stop: N-1 idle cgroups ``bench/w0000..`` and ``bench/event/w`` (memory.max 512 MiB) under
``bench/event`` (memory.high 32 MiB), all watched with 2 s windows. An anonymous-memory hog in
``bench/event/w`` makes the daemon clamp its memory.high (the reaction series' set-up); the hog
is killed and SIGTERM sent at once, before the 2 s calm, so the clamp is still the daemon's to
give back on exit. Measured from outside: SIGTERM -> the process has exited (waitpid), the
restores the daemon recorded after SIGTERM, and memory.high read back after the exit.

Close cost (``--close-threads``): N triggers armed as the daemon arms them (one per cgroup,
2 s windows), then closed by P plain threads: the kernel's share of the stop, without the
daemon, for choosing the watcher's thread count. On 6.1 each close waits for an RCU grace
period and, for a cgroup's last trigger, for its psimon thread to stop.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence

from bench.cost import fleet
from bench.cost import guest as cost
from bench.cost.procstat import count_kernel_threads
from tests.vm.guest import lib

Json = cost.Json
# Through the scale series' module, which imports it from where the daemon defines it.
RecordType = cost.RecordType  # type: ignore[attr-defined]


def _now() -> float:
    return time.monotonic()


def _watched_cgroups(n: int) -> List[str]:
    """N-1 idle fillers and the event cgroup: N watched in all."""
    fillers = fleet.numbered("w", max(0, n - 1))
    if fillers:
        fleet.create(cost.PARENT, fillers)
    lib.make_cgroup(cost.EVENT_CGROUP, memory_max=str(cost.EVENT_MAX))
    lib.write(cost.EVENT_PARENT, "memory.high", str(cost.EVENT_PARENT_HIGH))
    return [f"{cost.PARENT}/{name}" for name in fillers] + [cost.EVENT_CGROUP]


def _arm(cgroups: Sequence[str], window: Sequence[int]) -> List[int]:
    stall_ms, window_ms = window
    payload = f"full {stall_ms * 1000} {window_ms * 1000}\0".encode("ascii")
    fds = []
    for cgroup in cgroups:
        fd = os.open(lib.cgroup_dir(cgroup) / "memory.pressure", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(fd, payload)
        fds.append(fd)
    return fds


def _close_with_threads(fds: List[int], threads: int) -> float:
    pending = iter(fds)
    lock = threading.Lock()

    def close_some() -> None:
        while True:
            with lock:
                fd = next(pending, None)
            if fd is None:
                return
            os.close(fd)

    workers = [threading.Thread(target=close_some) for _ in range(max(1, min(threads, len(fds))))]
    started = _now()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return _now() - started


def close_cost(cgroups: Sequence[str], thread_counts: Sequence[int]) -> List[Json]:
    # N open trigger fds, as the daemon holds them (it raises its limit the same way).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    for threads in thread_counts:
        started = _now()
        fds = _arm(cgroups, cost.WINDOW_2S)
        armed_sec = _now() - started
        psimon = count_kernel_threads()
        close_sec = _close_with_threads(fds, threads)
        rows.append(
            {
                "threads": threads,
                "fds": len(fds),
                "arm_sec": armed_sec,
                "psimon_armed": psimon,
                "close_sec": close_sec,
                "psimon_after_close": count_kernel_threads(),
            }
        )
        print(f"[stop] close {len(fds)} fds from {threads} threads: {close_sec:.2f} s", flush=True)
    return rows


def stop_with_a_restore(n: int) -> Json:
    stall_ms, window_ms = cost.WINDOW_2S
    daemon = lib.Daemon(
        Path("/tmp/bench-cost/stop"),
        {"bench": cost.policy_text(stall_ms, window_ms, [cost.WATCH_GLOB, cost.EVENT_CGROUP])},
        settings={"rescan_interval_sec": cost.RESCAN_INTERVAL_SEC},
    )
    out: Json = {"n": n}
    started = _now()
    daemon.start(ready_timeout_sec=1800)
    assert daemon.proc is not None
    out["ready_sec"] = _now() - started
    out["watched_at_ready"] = len(daemon.find(lib.by_id(RecordType.WATCH_STARTED.message_id)))
    out["psimon_threads"] = count_kernel_threads()
    applied_id = RecordType.ACTION_APPLIED.message_id
    hog_started = _now()
    hog = cost.sustained_anon_hog(cost.EVENT_CGROUP, cost.HOG_MIB)
    try:
        applied = daemon.wait_for(
            lambda r: r.get("MESSAGE_ID") == applied_id and r.get("REMEDIATOR_CGROUP") == cost.EVENT_CGROUP,
            cost.WAIT_SEC,
        )
    finally:
        hog.kill()
        hog.wait()
    out["clamped"] = applied is not None
    out["clamp_sec"] = (applied["_ARRIVED"] - hog_started) if applied else None
    out["memory_high_before_stop"] = lib.read(cost.EVENT_CGROUP, "memory.high")
    # At once, before the 2 s calm could give the value back: the stop has to.
    signalled = _now()
    out["exit_code"] = daemon.stop(timeout_sec=1800)
    out["stop_sec"] = _now() - signalled
    out["memory_high_after_exit"] = lib.read(cost.EVENT_CGROUP, "memory.high")
    after = [r for r in daemon.snapshot() if r["_ARRIVED"] >= signalled]
    rolled_id = RecordType.ROLLED_BACK.message_id
    restores = [r for r in after if r.get("MESSAGE_ID") == rolled_id]
    out["restores_after_sigterm"] = len(restores)
    out["restore_results"] = [r.get("REMEDIATOR_RESULT") for r in restores]
    out["restore_record_sec"] = [r["_ARRIVED"] - signalled for r in restores]
    stopping = [r for r in after if r.get("MESSAGE_ID") == RecordType.DAEMON_STOPPING.message_id]
    out["stopping_record_sec"] = stopping[0]["_ARRIVED"] - signalled if stopping else None
    out["psimon_threads_after_exit"] = count_kernel_threads()
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="remediator stop time, guest side")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--close-threads", default="", help="comma-separated thread counts ('' for none)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    lib.in_vm_or_die()
    started = _now()
    report: Json = {"machine": cost.machine(), "argv": shlex.join(sys.argv)}
    setup = _now()
    cgroups = _watched_cgroups(args.n)
    stop: Json = {"n": args.n, "setup_sec": _now() - setup}
    stop["cold_run_once_sec"] = cost.warm_up()
    stop["daemon"] = stop_with_a_restore(args.n)
    thread_counts = [int(x) for x in args.close_threads.split(",") if x]
    stop["close_cost"] = close_cost(cgroups, thread_counts)
    report["stop"] = stop
    report["guest_elapsed_sec"] = _now() - started
    args.out.write_text(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
