"""``remediator run --once`` end to end on a copied (fake) tree, through run_service as the CLI calls it.

Issue 12 items 3 and 4: --once honours restore_on_exit and records its stop; a tree that is not a
cgroup2 mount is sampled, never armed, and a dry-run on it changes no byte anywhere.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, Iterator

import pytest

from remediator.daemon.run import run_service
from remediator.settings import Settings, load_settings
from tests.fakefs import FakeKernel, pressure_text

APP = "system.slice/app.service"
GiB = 1 << 30

POLICY = """\
target:
  kind: cgroups
  include: ["system.slice/*.service"]
trigger:
  pressure: full
  stall_ms: 100
  window_ms: 2000
  sustained_sec: 0
actions:
  - kind: memory_high
    relative_to: max
    fraction: 0.9
verify_sec: 2
rollback:
  calm_sec: 300
  restore_on_exit: {restore}
"""


def _settings(tmp_path: Path, kernel: FakeKernel, restore: bool, dry_run: bool) -> Settings:
    policies = tmp_path / "policies.d"
    policies.mkdir(mode=0o755, exist_ok=True)
    (policies / "app.yaml").write_text(POLICY.format(restore="true" if restore else "false"))
    return load_settings(
        None,
        False,
        {
            "cgroup_root": kernel.cgroup_root,
            "proc_root": kernel.proc_root,
            "policies_dir": policies,
            "state_file": tmp_path / "state" / "state.json",
            "log_target": "stderr",
            "metrics_textfile": "",
            "sampling_interval_sec": 1,
            "dry_run": dry_run,
        },
        environ={},
    )


def _copied_tree(tmp_path: Path) -> FakeKernel:
    kernel = FakeKernel(tmp_path / "copy")
    kernel.add_cgroup(APP, current=int(3.8 * GiB), max_bytes=4 * GiB, high=None)
    # A copied tree: no cgroup2 mount at its root (a bug report replayed with --cgroup-root).
    (kernel.proc_root / "self" / "mounts").write_text("proc /proc proc rw 0 0\n")
    return kernel


@pytest.fixture
def stalling(tmp_path: Path) -> Iterator[FakeKernel]:
    """A cgroup whose full stall grows 50 % of wall time while the pass settles."""
    kernel = _copied_tree(tmp_path)
    pressure = kernel.cgroup_root / APP / "memory.pressure"
    stop = threading.Event()

    def grow() -> None:
        total = 0
        while not stop.wait(0.05):
            total += 25_000
            pressure.write_text(pressure_text((50, 50, 50, total), (50, 50, 50, total)))

    worker = threading.Thread(target=grow, daemon=True)
    worker.start()
    yield kernel
    stop.set()
    worker.join()


def test_once_enforcing_gives_back_memory_high_when_the_policy_restores_on_exit(
    tmp_path: Path, stalling: FakeKernel, capfd: pytest.CaptureFixture[str]
) -> None:
    assert run_service(_settings(tmp_path, stalling, restore=True, dry_run=False), once=True) == 0
    err = capfd.readouterr().err
    assert "set memory.high of system.slice/app.service" in err
    assert "on exit" in err and "remediator stopping" in err
    assert stalling.read_file(APP, "memory.high").strip() == "max"


def test_once_enforcing_leaves_memory_high_when_the_policy_keeps_it(
    tmp_path: Path, stalling: FakeKernel, capfd: pytest.CaptureFixture[str]
) -> None:
    assert run_service(_settings(tmp_path, stalling, restore=False, dry_run=False), once=True) == 0
    err = capfd.readouterr().err
    assert "remediator stopping" in err
    clamp = int(stalling.read_file(APP, "memory.high"))
    assert 0.89 * 4 * GiB < clamp <= 0.9 * 4 * GiB  # 90 % of memory.max, page-aligned


def _contents(root: Path) -> Dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dry_run_once_on_a_copied_tree_arms_nothing_and_writes_no_byte(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    kernel = _copied_tree(tmp_path)
    stalled = pressure_text((50, 50, 50, 10**9), (50, 50, 50, 10**9))
    (kernel.cgroup_root / APP / "memory.pressure").write_text(stalled)
    before = _contents(kernel.base)
    assert run_service(_settings(tmp_path, kernel, restore=True, dry_run=True), once=True) == 0
    assert _contents(kernel.base) == before  # no trigger string, no value, no truncation
    assert not (tmp_path / "state").exists()  # nor a state file or a kept policy set
    assert "memory.pressure (sampling)" in capfd.readouterr().err
