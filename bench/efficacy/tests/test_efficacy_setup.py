"""Scenarios, the plan, the native mode's guards and the workload itself (no VM, no root, no writes)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator, List

import pytest
import yaml

from bench.efficacy.__main__ import plan_runs, shipped_policies, slim_run
from bench.efficacy.native import confined_policies, filesystem_type, refusal_reason
from bench.efficacy.scenarios import NATIVE_CGROUP, SCENARIOS, SERIES, VM_CGROUP, series_order
from bench.efficacy.workload import MIB, Workload, WorkloadConfig
from remediator.kernel.roots import KernelRoots
from remediator.policy.loader import load_policy_dir
from tests.fakefs import FakeKernel


def test_every_repeat_runs_every_series_once_and_no_series_is_always_first() -> None:
    orders = [series_order(repeat) for repeat in range(len(SERIES))]

    assert all(sorted(order) == sorted(SERIES) for order in orders)
    assert len({order[0] for order in orders}) == len(SERIES)


def test_plan_has_one_vm_per_scenario_and_repeat() -> None:
    plan = plan_runs(["seed", "tmpfs-heavy"], repeats=3, duration_sec=30.0)

    assert len(plan) == 6
    assert all({run["series"] for run in vm} == set(SERIES) for vm in plan)
    assert all(len({run["scenario"] for run in vm}) == 1 for vm in plan)


def test_static_memory_high_is_ninety_percent_of_max_page_aligned() -> None:
    seed = SCENARIOS["seed"]

    assert seed.static_high_bytes() % 4096 == 0
    assert seed.static_high_bytes() <= 0.9 * seed.memory_max_bytes < seed.static_high_bytes() + 4096


def test_scenarios_have_the_memory_the_issue_describes() -> None:
    seed, tmpfs, beyond = SCENARIOS["seed"], SCENARIOS["tmpfs-heavy"], SCENARIOS["beyond-limit"]

    assert seed.memory_max_mib == 256 and seed.anon_fraction == 0.45 and seed.tmpfs_mib == 0
    assert tmpfs.tmpfs_fraction == 0.5
    assert beyond.anon_fraction + beyond.tmpfs_fraction > 1.0


def test_the_shipped_policy_selects_the_vm_cgroup_and_the_confined_copy_selects_only_the_native_one() -> None:
    shipped = shipped_policies()
    services = next(p for p in load_policy_dir(Path("policies")).policies if p.name == "services-cache")
    assert services.target.matches(VM_CGROUP)  # type: ignore[union-attr]

    confined = confined_policies(shipped, NATIVE_CGROUP)

    assert set(confined) == {"services-cache"}  # node policies change vm.* for every tenant: left out
    document = yaml.safe_load(confined["services-cache"])
    assert document["target"] == {"kind": "cgroups", "include": [NATIVE_CGROUP], "exclude": []}
    assert document["actions"] == yaml.safe_load(shipped["services-cache"])["actions"]


def test_native_mode_refuses_a_host_without_a_cgroup_v2_memory_controller(tmp_path: Path) -> None:
    kernel = FakeKernel(tmp_path)
    # The development hosts' layout: an empty cgroup2 beside a v1 memory hierarchy.
    (kernel.proc_root / "self" / "mounts").write_text(
        "proc /proc proc rw 0 0\n"
        f"cgroup2 {kernel.cgroup_root}/unified cgroup2 rw 0 0\n"
        f"cgroup {kernel.cgroup_root}/memory cgroup rw,memory 0 0\n"
    )

    reason = refusal_reason(kernel.roots, euid=0)

    assert reason is not None
    assert "cgroup v2 memory controller" in reason


def test_native_mode_refuses_this_development_host() -> None:
    # The development and CI hosts have a hybrid layout (kernel-facts.md): the
    # benchmark must say so rather than write anything. Reads only.
    reason = refusal_reason(KernelRoots(), euid=0)

    assert reason is not None


def test_filesystem_type_is_that_of_the_longest_containing_mount_point() -> None:
    mounts = "\n".join(
        [
            "/dev/vda / ext4 rw 0 0",
            "tmpfs /var/tmp tmpfs rw 0 0",
            "/dev/vdb /var/tmp/disk xfs rw 0 0",
        ]
    )

    assert filesystem_type(Path("/var/tmp/disk/bench"), mounts) == "xfs"
    assert filesystem_type(Path("/var/tmp/other"), mounts) == "tmpfs"
    assert filesystem_type(Path("/srv"), mounts) == "ext4"


def test_slim_run_keeps_mib_per_second_and_the_key_record_fields() -> None:
    run = {
        "progress": [
            {"event": "scan", "mib": 4.0, "arrived": 0.2},
            {"event": "scan", "mib": 8.0, "arrived": 0.9},
            {"event": "scan", "mib": 12.0, "arrived": 1.1},
        ],
        "records": [{"MESSAGE_ID": "x", "_ARRIVED": 1.0, "REMEDIATOR_ANON": "1"}],
    }

    slim = slim_run(run)

    assert slim["scanned_mib_at_second"] == [[0, 8.0], [1, 12.0]]
    assert slim["records"] == [{"MESSAGE_ID": "x", "_ARRIVED": 1.0}]
    assert "progress" not in slim


def _ticks(step: float) -> Iterator[float]:
    now = 0.0
    while True:
        yield now
        now += step


def _events(out: io.StringIO) -> List[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("access", ["mmap", "read"])
def test_workload_scans_whole_files_and_reports_cumulative_mib(tmp_path: Path, access: str) -> None:
    files = []
    for index in range(2):
        path = tmp_path / f"f{index}"
        path.write_bytes(b"\x03" * (6 * MIB))
        files.append(path)
    clock = _ticks(0.01)
    out = io.StringIO()
    config = WorkloadConfig(files, access, 0, 0.0, None, 0, None, 0, duration_sec=1.0)

    Workload(config, out, clock=lambda: next(clock)).run()

    events = _events(out)
    passes = [e for e in events if e["event"] == "pass"]
    assert passes and passes[0]["mib"] == 12.0  # both files, completely
    scans = [e["mib"] for e in events if e["event"] == "scan"]
    assert scans == sorted(scans)
    assert events[-1]["event"] == "done"


def test_workload_anon_heap_grows_over_the_ramp_then_stays(tmp_path: Path) -> None:
    data = tmp_path / "f"
    data.write_bytes(b"\x03" * (4 * MIB))
    clock = _ticks(0.5)
    out = io.StringIO()
    config = WorkloadConfig([data], "mmap", 16, 4.0, None, 0, None, 0, duration_sec=12.0)
    workload = Workload(config, out, clock=lambda: next(clock))

    workload.run()

    anon = [e["mib"] for e in _events(out) if e["event"] == "anon"]
    assert anon == sorted(anon) and anon[-1] == 16 and len(anon) > 1
    assert len(workload.heap) * 4 == 16


def test_workload_writes_tmpfs_files_and_dirty_data_where_told(tmp_path: Path) -> None:
    data = tmp_path / "f"
    data.write_bytes(b"\x03" * MIB)
    shm = tmp_path / "shm"
    shm.mkdir()
    # Every look at the clock moves it: the loop also times each chunk (its latency).
    clock = _ticks(0.1)
    config = WorkloadConfig([data], "read", 0, 0.0, shm, 40, tmp_path / "dirty", 2, duration_sec=1.0)

    Workload(config, io.StringIO(), clock=lambda: next(clock)).run()

    assert sum(p.stat().st_size for p in shm.iterdir()) == 40 * MIB
    assert (tmp_path / "dirty").stat().st_size == 2 * MIB


class FakeTime:
    """A clock that moves a little at every look, and jumps when slept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: List[float] = []

    def clock(self) -> float:
        self.now += 0.001
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_paced_workload_idles_rather_than_scanning_ahead_of_its_demand(tmp_path: Path) -> None:
    data = tmp_path / "f"
    data.write_bytes(b"\x03" * (8 * MIB))
    fake = FakeTime()
    out = io.StringIO()
    config = WorkloadConfig([data], "mmap", 0, 0.0, None, 0, None, 0, duration_sec=3.0, pace_mib_s=8.0)

    Workload(config, out, clock=fake.clock, sleep=fake.sleep).run()

    scans = [e for e in _events(out) if e["event"] == "scan"]
    assert fake.slept  # it was ahead of 8 MiB/s and waited
    # Never more than one chunk ahead of the demand.
    assert all(e["mib"] <= 8.0 * e["t"] + 4.0 for e in scans)
    assert scans[-1]["mib"] >= 8.0 * 2.5


def test_emulation_is_read_from_the_cpu_model_before_asking_any_tool() -> None:
    from bench.efficacy.environment import emulation

    def must_not_run() -> None:
        raise AssertionError("systemd-detect-virt asked although the CPU model says TCG")

    tcg = "model name\t: QEMU TCG CPU version 2.5+\nflags\t\t: fpu hypervisor\n"
    kvm = "model name\t: AMD EPYC\nflags\t\t: fpu hypervisor\n"
    metal = "model name\t: AMD EPYC\nflags\t\t: fpu\n"

    assert emulation(tcg, must_not_run) == "software emulation (qemu TCG)"
    assert emulation(kvm, lambda: "kvm") == "virtual machine (kvm)"
    assert emulation(kvm, lambda: None) == "virtual machine (hypervisor flag)"
    assert emulation(metal, lambda: "none") == "none (bare metal)"
