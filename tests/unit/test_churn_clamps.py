"""One ledger under pod churn (issue 11): clamped cgroups come and go for simulated minutes.

Each cgroup is created, pressured once (so the daemon sets its memory.high), and removed while
clamped; names are reused, as restarted pods and units reuse them. Throughout, the state file holds
originals of live clamps only (a removed cgroup's entry leaves it within one rescan), each entry
belongs to the cgroup now under its name (its id is that directory's), and no new cgroup under a
reused name inherits the original of the dead one. Before, the file kept every clamped-then-removed
cgroup until the next start (about 370 bytes each) and a new cgroup under a dead one's name
inherited its original.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from remediator.clock import FakeClock
from remediator.daemon.executor import Executor
from remediator.daemon.journal import CapturingWriter
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.notify import Notifier
from remediator.daemon.service import Service
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Watcher
from remediator.kernel.capabilities import probe
from remediator.kernel.psi_trigger import PsiTrigger, TriggerCheck, TriggerRefused
from remediator.records import Knob, RecordType
from remediator.settings import load_settings
from tests.fakefs import FakeKernel, pressure_text

MiB = 1 << 20
POLICY = """\
target: {kind: cgroups, include: ["churn.slice/*.scope"]}
trigger: {pressure: full, stall_ms: 200, window_ms: 2000}
actions: [{kind: memory_high, fraction: 0.9, cooldown_sec: 0}]
rollback: {calm_sec: 3600}
"""
TOTAL = 1000
LIVE = 100
PER_STEP = 4
STEP_SEC = 0.25
PRESSURE_AFTER_SEC = 3.0  # once its baseline has been taken


def _refuse(path: Path, _spec: PsiTrigger, _cgroup_dir: object = None) -> int:
    raise TriggerRefused(path, "trigger refused: Invalid argument", 22)


def _entries(path: Path) -> List[Dict[str, object]]:
    if not path.exists():
        return []
    entries: List[Dict[str, object]] = json.loads(path.read_text())["entries"]
    return entries


def test_a_thousand_clamped_and_removed_cgroups_leave_only_live_clamps_in_the_state_file(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    kernel.add_cgroup("churn.slice")
    policies = tmp_path / "policies.d"
    policies.mkdir()
    (policies / "churn.yaml").write_text(POLICY)
    state_file = tmp_path / "run" / "state.json"
    settings = load_settings(
        None,
        False,
        {"cgroup_root": kernel.cgroup_root, "proc_root": kernel.proc_root, "policies_dir": policies,
         "state_file": state_file, "rescan_interval_sec": 1, "sampling_interval_sec": 1,
         "metrics_textfile": ""},
        environ={},
    )  # fmt: skip
    clock = FakeClock()
    writer = CapturingWriter()
    watcher = Watcher(kernel.roots, clock, settings.sampling_interval_sec, arm=_refuse)
    service = Service(
        settings=settings, clock=clock, writer=writer, notifier=Notifier(environ={}),
        executor=Executor(KernelFiles.under(kernel.roots), StateStore(settings.state_file), clock),
        watcher=watcher,
        capabilities=probe(kernel.roots, trigger_checker=lambda _p, _s: TriggerCheck(True, "", None)),
    )  # fmt: skip
    pool = 2 * LIVE  # names come back after 2 x LIVE creations
    born: Dict[str, float] = {}
    removed_at: Dict[str, float] = {}
    pressured: Dict[str, bool] = {}
    alive: List[str] = []
    created = clamped_when_removed = largest = 0
    try:
        service.start()

        def check_ledger() -> None:
            nonlocal largest
            entries = _entries(state_file)
            largest = max(largest, len(entries))
            now = clock.monotonic()
            for entry in entries:
                name = str(entry["cgroup"])
                if name not in alive:
                    # Gone: its original may stay until the next rescan, never longer.
                    assert now - removed_at[name] <= settings.rescan_interval_sec + STEP_SEC, name
                    continue
                assert entry["cgroup_id"] == (kernel.cgroup_root / name).stat().st_ino, name
                assert entry["original"] == "max"  # every cgroup here starts unclamped: never inherited

        def remove(name: str) -> None:
            nonlocal clamped_when_removed
            if kernel.read_file(name, "memory.high").strip() != "max":
                clamped_when_removed += 1
            for child in (kernel.cgroup_root / name).iterdir():
                child.unlink()
            (kernel.cgroup_root / name).rmdir()
            removed_at[name] = clock.monotonic()

        while created < TOTAL or alive:
            for _ in range(PER_STEP):
                if len(alive) >= LIVE or (created >= TOTAL and alive):
                    remove(alive.pop(0))
                if created < TOTAL:
                    name = f"churn.slice/c{created % pool}.scope"
                    kernel.add_cgroup(name, current=900 * MiB, max_bytes=1024 * MiB)
                    born[name], pressured[name] = clock.monotonic(), False
                    alive.append(name)
                    created += 1
            now = clock.monotonic()
            for name in alive:
                if not pressured[name] and now - born[name] >= PRESSURE_AFTER_SEC:
                    stalled = pressure_text((90, 90, 90, 10**9), (90, 90, 90, 10**9))
                    kernel.set_file(name, "memory.pressure", stalled)
                    pressured[name] = True
            clock.advance(STEP_SEC)
            service.step()
            check_ledger()
        for _ in range(int(2 * settings.rescan_interval_sec / STEP_SEC)):
            clock.advance(STEP_SEC)
            service.step()
        service.flush_held_records()
    finally:
        watcher.close()

    clamps = [
        r for r in writer.records if r.type is RecordType.ACTION_APPLIED and r.action is Knob.MEMORY_HIGH
    ]
    # Nearly every cgroup was clamped (a reused name's clamps within a minute are coalesced) ...
    assert sum(int(r.extra.get("REPEATED", "1")) for r in clamps) >= TOTAL * 0.9
    assert clamped_when_removed >= TOTAL * 0.9  # ... and removed while clamped
    # The file never held more than the live clamps and those removed within the last rescan.
    assert largest <= LIVE + PER_STEP * (settings.rescan_interval_sec + STEP_SEC) / STEP_SEC
    assert _entries(state_file) == []  # every removed cgroup's original left the file
