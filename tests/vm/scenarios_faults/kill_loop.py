"""SIGKILL at random points, again and again, then restarts: no clamp is ever left behind.

A cgroup is kept under pressure (a child squeezed under its own memory.high),
so each run of the daemon clamps its memory.high (and may back off and clamp
again). Each run is killed with SIGKILL at a random moment: while starting
(before READY, possibly in the middle of the previous run's recovery), or
0-4 s after READY (before, during or after a clamp and its state-file
writes). The next run starts on the same state file.

Measured per run: when it was killed, memory.high at the kill, memory.high
right after the next run is READY (recovery happens before READY, so it must
be the original unless the new run has already clamped again, which its
records say), and the state file. After the loop the pressure stops and a
last run is stopped with SIGTERM: memory.high must be the original and the
state file empty.

Usage: ``python -m tests.vm.scenarios_faults.kill_loop RUNS SEED``
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

from remediator.records import RecordType
from tests.vm.guest import lib
from tests.vm.scenarios.daemon_records import of_type

NAME = "kill_loop"
WORKDIR = Path("/tmp") / NAME
APP = "vmt-kill/app"
SQUEEZED = f"{APP}/squeezed"
MEMORY_MAX = 256 << 20
AFTER_READY_MAX_SEC = 4.0
READY_TIMEOUT_SEC = 60.0
POLICY_ACTIONS = "  - kind: memory_high\n    fraction: 0.7\n    cooldown_sec: 0\n    max_per_hour: 1000\n"


def state_entries(daemon: lib.Daemon) -> Optional[List[Any]]:
    try:
        entries: List[Any] = json.loads(daemon.state_file.read_text())["entries"]
    except (OSError, ValueError, KeyError):
        return None
    return entries


def clamped_since(daemon: lib.Daemon) -> bool:
    return bool(
        daemon.find(
            lambda r: (
                of_type(RecordType.ACTION_APPLIED, APP)(r) and r.get("REMEDIATOR_ACTION") == "memory_high"
            )
        )
    )


def one_run(policies: Dict[str, str], rng: random.Random, ready_estimate: float) -> Dict[str, Any]:
    """Start a daemon, kill it at a random moment, and say what was where."""
    daemon = lib.Daemon(WORKDIR, policies, settings={"rescan_interval_sec": 300})
    # Half the kills land while starting (recovery, policy load, arming), half after READY.
    before_ready = rng.random() < 0.5
    kill_at = rng.uniform(0.05, ready_estimate) if before_ready else rng.uniform(0.0, AFTER_READY_MAX_SEC)
    run: Dict[str, Any] = {
        "planned": "before_ready" if before_ready else "after_ready",
        "kill_at_sec": round(kill_at, 3),
    }
    spawned = time.monotonic()
    try:
        daemon.start(ready_timeout_sec=kill_at if before_ready else READY_TIMEOUT_SEC)
        run["ready_after_sec"] = round(time.monotonic() - spawned, 3)
        run["memory_high_at_ready"] = lib.read(APP, "memory.high")
        run["clamped_before_ready_read"] = clamped_since(daemon)
        # Every record of the start-up recovery names "a previous run" (restored, not_restored, gone).
        run["recovery_results"] = [
            r.get("REMEDIATOR_RESULT")
            for r in daemon.snapshot()
            if "by a previous run" in str(r.get("MESSAGE"))
        ]
        if not before_ready:
            time.sleep(kill_at)
    except RuntimeError:
        run["killed_before_ready"] = True
    daemon.kill9()
    run["lived_sec"] = round(time.monotonic() - spawned, 3)
    run["memory_high_at_kill"] = lib.read(APP, "memory.high")
    run["clamped_in_run"] = clamped_since(daemon)
    run["state_entries_at_kill"] = state_entries(daemon)
    run["quarantined"] = len(daemon.find(of_type(RecordType.STATE_QUARANTINED)))
    return run


def main(runs: int, seed: int) -> int:
    lib.in_vm_or_die()
    report: Dict[str, Any] = {"error": None, "runs_planned": runs, "seed": seed}
    loop: List[Dict[str, Any]] = []
    report["runs"] = loop
    rng = random.Random(seed)
    squeezer: Optional[subprocess.Popen[bytes]] = None
    final: Optional[lib.Daemon] = None
    policies = {
        "kill": lib.policy_yaml(
            [APP], POLICY_ACTIONS, pressure="some", window_ms=1000, verify_sec=2, calm_sec=600
        )
    }
    try:
        lib.make_cgroup(APP, memory_max=str(MEMORY_MAX))
        lib.make_cgroup(SQUEEZED, memory_high=str(16 << 20))
        original = lib.read(APP, "memory.high")
        report["original_memory_high"] = original
        squeezer = lib.anon_hog(SQUEEZED, 64)
        # One clean start measures how long READY takes here (TCG, other VMs on the host).
        probe = lib.Daemon(WORKDIR, policies, settings={"rescan_interval_sec": 300})
        spawned = time.monotonic()
        probe.start(ready_timeout_sec=READY_TIMEOUT_SEC)
        ready_estimate = time.monotonic() - spawned
        report["ready_estimate_sec"] = round(ready_estimate, 3)
        probe.kill9()
        for _ in range(runs):
            loop.append(one_run(policies, rng, ready_estimate))
        squeezer.kill()
        squeezer.wait()
        squeezer = None
        final = lib.Daemon(WORKDIR, policies, settings={"rescan_interval_sec": 300})
        final.start(ready_timeout_sec=READY_TIMEOUT_SEC)
        report["memory_high_at_final_ready"] = lib.read(APP, "memory.high")
        time.sleep(1.0)
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        if squeezer is not None:
            squeezer.kill()
            squeezer.wait()
        if final is not None:
            report["final_exit_code"] = final.stop()
            report["final_state_entries"] = state_entries(final)
            kept = {t.message_id for t in (RecordType.STATE_RECOVERED, RecordType.ROLLED_BACK,
                                          RecordType.STATE_QUARANTINED)}  # fmt: skip
            report["final_records"] = [
                {k: v for k, v in r.items() if k != "_ARRIVED"} for r in final.snapshot()
                if r.get("MESSAGE_ID") in kept
            ]  # fmt: skip
        report["final_memory_high"] = lib.read(APP, "memory.high") if lib.cgroup_dir(APP).exists() else None
        lib.remove_cgroup("vmt-kill")
        lib.write_report(NAME, report)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
