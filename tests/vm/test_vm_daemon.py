"""The daemon against a real kernel (issue 4, tests 1-8): host-side assertions on guest-side scenarios.

Each scenario (``tests/vm/scenarios/NAME.py``) runs inside the light VM as root,
drives the real daemon as a process against the guest's cgroup v2 tree, and
writes what it measured to ``NAME.json``. A boot serves a small group of
scenarios (run one after the other, each with its own cgroups, daemon and state
file); the tests here assert one behaviour each on those reports. Measured
figures (latencies, CPU seconds) go to the "VM timings" section at the end of
the run, so CI logs show them, and are printed (``-s``).

The capability probe on the host itself needs no VM and runs with the unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from remediator.records import RecordType
from tests.vm import harness, scenario_boot
from tests.vm.scenario_boot import ScenarioBoot
from tests.vm.scenarios import (
    child_high_events,
    crash_recovery,
    dry_run,
    memory_high,
    new_cgroups,
    reclaim,
    removed_cgroup,
    trigger_fires,
)

# Generous: other engineers boot VMs on the same two cores, and TCG slows down with them.
BOOT_TIMEOUT_SEC = 300.0
DRIVE = "/dev/vdb"
PAGE = 4096
MIB = 1 << 20

Record = Dict[str, Any]


# ---- booting scenarios ------------------------------------------------------------------------


def boot_scenarios(
    vm_light: harness.LightVm,
    out_dir: Path,
    scenarios: Sequence[Tuple[str, Sequence[str]]],
    disk_files_mib: Optional[Mapping[str, int]] = None,
) -> ScenarioBoot:
    """Boot once and run each ``(scenario, args)`` of tests/vm/scenarios in turn; drive at DRIVE."""
    return scenario_boot.boot_scenarios(
        vm_light, out_dir, scenarios, package="tests.vm.scenarios", timeout_sec=BOOT_TIMEOUT_SEC,
        disk_files_mib=disk_files_mib,
    )  # fmt: skip


def show(label: str, seconds: float) -> None:
    """A measured figure, in the run's "VM timings" section and on stdout."""
    harness.record_timing(label, seconds)
    print(f"{label}: {seconds:.3f} s")


# ---- reading records --------------------------------------------------------------------------


def records_of(
    records: Sequence[Record], record_type: RecordType, cgroup: Optional[str] = None, action: str = ""
) -> List[Record]:
    return [
        r
        for r in records
        if r.get("MESSAGE_ID") == record_type.message_id
        and (cgroup is None or r.get("REMEDIATOR_CGROUP") == cgroup)
        and (not action or r.get("REMEDIATOR_ACTION") == action)
    ]


def only(records: List[Record], what: str, all_records: Sequence[Record]) -> Record:
    assert records, f"no {what}; records:\n{readable(all_records)}"
    return records[0]


def readable(records: Sequence[Record]) -> str:
    return "\n".join(
        f"{r.get('ARRIVED_SEC')} {r.get('RECORD_TYPE')} {r.get('REMEDIATOR_CGROUP', '-')} "
        f"{r.get('REMEDIATOR_RESULT', '-')}: {r.get('MESSAGE')}"
        for r in records
    )


def page_aligned_fraction(value: int, fraction: float) -> int:
    return int(value * fraction) // PAGE * PAGE


# ---- 1. the capability probe --------------------------------------------------------------------


def _layout_from_mount_table() -> Tuple[str, List[str]]:
    """The host's layout and its v1 memory mounts, read straight from /proc/self/mounts (not by the probe)."""
    fields = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    has_cgroup2 = any(f[2] == "cgroup2" for f in fields)
    v1_memory = [f[1] for f in fields if f[2] == "cgroup" and "memory" in f[3].split(",")]
    if has_cgroup2:
        return ("hybrid" if v1_memory else "unified"), v1_memory
    return ("legacy" if v1_memory else "none"), v1_memory


def test_capability_probe_on_the_host_agrees_with_the_mount_table_and_explains_a_hybrid_layout(
    tmp_path: Path,
) -> None:
    # Reads only, apart from arming and dropping triggers on /proc/pressure/memory (no setting is written).
    status = subprocess.run(
        [sys.executable, "-m", "remediator", "--policies", str(tmp_path), "status", "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=harness.REPO_ROOT,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    caps = json.loads(status.stdout)["capabilities"]
    layout, v1_memory = _layout_from_mount_table()
    print(f"host layout: {caps['layout']}; {' '.join(caps['summary'])}")

    assert caps["layout"] == layout
    assert caps["memory_v1_mount_points"] == v1_memory
    assert caps["psi_present"] == Path("/proc/pressure/memory").exists()
    if layout == "hybrid":
        # The dev and CI hosts: memory on v1, an empty cgroup2 elsewhere.
        assert not caps["memory_controller_v2"]
        assert not caps["can_remediate_cgroups"]
        assert not caps["memory_reclaim"]
        assert any("hybrid layout" in line for line in caps["summary"])
        assert any("only node-level pressure can be watched" in line for line in caps["summary"])


@pytest.fixture(scope="module")
def probe_and_trigger_boot(
    vm_light: harness.LightVm, tmp_path_factory: pytest.TempPathFactory
) -> ScenarioBoot:
    return boot_scenarios(
        vm_light, tmp_path_factory.mktemp("probe-trigger"), [("capabilities", []), ("trigger_fires", [])]
    )


@pytest.mark.vm
def test_capability_probe_in_the_vm_reports_cgroup2_memory_controller_psi_memory_reclaim_and_triggers(
    probe_and_trigger_boot: ScenarioBoot,
) -> None:
    report = probe_and_trigger_boot.report("capabilities")
    caps = report["status"]["capabilities"]
    guest = report["guest_sees"]

    assert report["status_exit_code"] == 0, report["status_stderr"]
    assert guest["cgroup_fs_type"] == "cgroup2"
    assert caps["layout"] == "unified"
    assert "/sys/fs/cgroup" in caps["cgroup2_mount_points"]
    assert caps["memory_v1_mount_points"] == []
    assert caps["cgroup_root_is_cgroup2"]
    assert caps["root_controllers"] == guest["root_controllers"]
    assert "memory" in caps["root_controllers"]
    assert "memory" in caps["root_subtree_control"]
    assert caps["memory_controller_v2"]
    assert caps["can_remediate_cgroups"]
    # Seen in a child cgroup, not inferred from the kernel version.
    assert guest["child_has_memory_reclaim"]
    assert caps["memory_reclaim"]
    assert any("memory.reclaim file is present" in line for line in caps["summary"])
    assert guest["proc_pressure_memory_exists"]
    assert caps["psi_present"]
    assert caps["watch_mode"] == "triggers"
    # Root in the VM has CAP_SYS_RESOURCE: windows under 2 s are accepted too.
    assert caps["cap_sys_resource"] is True
    assert caps["trigger_2s_window"]["accepted"], caps["trigger_2s_window"]
    assert caps["trigger_1s_window"]["accepted"], caps["trigger_1s_window"]


# ---- 2. a trigger fires ---------------------------------------------------------------------------

# From the kernel's POLLPRI to the record on the daemon's stderr: one observation (a snapshot of a
# handful of files), the core, one JSON line. Milliseconds natively; seconds under a contended TCG.
PROCESSING_BOUND_SEC = 3.0


@pytest.mark.vm
def test_trigger_armed_by_the_watcher_fires_under_real_pressure_within_one_window_plus_processing(
    probe_and_trigger_boot: ScenarioBoot,
) -> None:
    report = probe_and_trigger_boot.report("trigger_fires")
    records = report["records"]
    confirmed = only(
        records_of(records, RecordType.PRESSURE_CONFIRMED, trigger_fires.CGROUP),
        "PRESSURE_CONFIRMED",
        records,
    )
    assert report["watch_mode"] == "armed", readable(records)
    assert report["crossed"], report
    latency = report["latency_sec"]
    show("trigger: memory.high crossed -> PRESSURE_CONFIRMED record", latency)

    assert confirmed["REMEDIATOR_POLICY"] == "trigger"
    assert 0 <= latency <= report["window_sec"] + PROCESSING_BOUND_SEC
    assert not records_of(records, RecordType.ACTION_FAILED), readable(records)


# ---- 3. reclaim ---------------------------------------------------------------------------------

# memory.reclaim on Debian's 6.1 takes more than it is asked for: 48.1 MiB asked took 68.4 MiB of a
# 96 MiB cache, and writes of 2 to 48 MiB each over-reclaimed by 30-45 % alike (measured in this
# VM). The kernel reports success all the same; "about the requested amount" allows for that.
KERNEL_OVERRECLAIM_FACTOR = 1.6


@pytest.fixture(scope="module")
def reclaim_boot(vm_light: harness.LightVm, tmp_path_factory: pytest.TempPathFactory) -> ScenarioBoot:
    return boot_scenarios(
        vm_light, tmp_path_factory.mktemp("reclaim"), [("reclaim", [DRIVE])], reclaim.DISK_FILES_MIB
    )


@pytest.mark.vm
def test_reclaim_lowers_file_of_a_cgroup_full_of_clean_page_cache_by_about_what_it_reports(
    reclaim_boot: ScenarioBoot,
) -> None:
    report = reclaim_boot.report("reclaim")
    records = report["records"]
    applied = only(
        records_of(records, RecordType.ACTION_APPLIED, reclaim.CACHE_PARENT, "reclaim"),
        "reclaim record",
        records,
    )
    before = report["before"][reclaim.CACHE_PARENT]
    after = report["cache_after"]
    asked = int(applied["REMEDIATOR_RECLAIM_ASKED_BYTES"])
    completed = int(applied["REMEDIATOR_RECLAIM_COMPLETED_BYTES"])
    dropped = before["file"] - after["file"]
    print(
        f"reclaim: cache {before['file'] / MIB:.1f} MiB, asked {asked / MIB:.1f} MiB, "
        f"completed {completed / MIB:.1f} MiB, file fell by {dropped / MIB:.1f} MiB"
    )

    assert applied["REMEDIATOR_RESULT"] in ("applied", "partial")
    # The setup: the cache was read from an ext4 drive, clean and not shmem.
    assert before["file"] >= 90 * MIB and before["shmem"] == 0 and before["file_dirty"] == 0
    reclaimable = before["active_file"] + before["inactive_file"]
    assert asked == pytest.approx(reclaim.FRACTION * reclaimable, rel=0.05)
    assert completed > 0
    assert completed * 0.95 <= dropped <= completed * KERNEL_OVERRECLAIM_FACTOR
    assert not records_of(records, RecordType.ACTION_FAILED), readable(records)


@pytest.mark.vm
def test_reclaim_on_a_cgroup_whose_file_is_shmem_is_declined_with_a_record_and_reclaims_nothing(
    reclaim_boot: ScenarioBoot,
) -> None:
    report = reclaim_boot.report("reclaim")
    records = report["records"]
    declined = only(
        records_of(records, RecordType.ACTION_DECLINED, reclaim.SHMEM_PARENT, "reclaim"),
        "reclaim decline on the shmem cgroup",
        records,
    )
    filler_before = report["before"][f"{reclaim.SHMEM_PARENT}/filler"]
    filler_after = report["filler_after"]

    assert report["shmem_outcome_seen"]
    # The setup: memory.stat counts the tmpfs file in `file`, all of it shmem.
    assert filler_before["shmem"] == reclaim.SHMEM_MIB * MIB
    assert filler_before["file"] >= filler_before["shmem"]
    assert declined["REMEDIATOR_RESULT"] == "declined"
    assert "shmem" in declined["MESSAGE"]
    for record_type in (RecordType.ACTION_APPLIED, RecordType.ACTION_FAILED):
        assert not records_of(records, record_type, reclaim.SHMEM_PARENT, "reclaim"), readable(records)
    assert filler_after["shmem"] == filler_before["shmem"]
    assert filler_after["file"] == filler_before["file"]
    # A memory.reclaim write to the parent would have scanned the filler's LRUs down to priority 0.
    assert filler_after["pgscan"] == filler_before["pgscan"]


# ---- 4. memory_high -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def memory_high_boot(vm_light: harness.LightVm, tmp_path_factory: pytest.TempPathFactory) -> ScenarioBoot:
    return boot_scenarios(
        vm_light,
        tmp_path_factory.mktemp("memory-high"),
        [("memory_high", [DRIVE]), ("child_high_events", [DRIVE])],
        {**memory_high.DISK_FILES_MIB, **child_high_events.DISK_FILES_MIB},
    )


@pytest.mark.vm
def test_memory_high_is_set_to_the_exact_page_aligned_fraction_of_memory_max_and_restored_after_calm(
    memory_high_boot: ScenarioBoot,
) -> None:
    report = memory_high_boot.report("memory_high")
    records = report["records"]
    cgroup = memory_high.SET_HERE
    expected = page_aligned_fraction(memory_high.MEMORY_MAX[cgroup], memory_high.FRACTION)
    applied = only(
        records_of(records, RecordType.ACTION_APPLIED, cgroup, "memory_high"), "memory_high write", records
    )
    restored = only(
        records_of(records, RecordType.ROLLED_BACK, cgroup, "memory_high"), "memory_high restore", records
    )
    seen = report["memory_high_seen"]
    calm_to_restore = restored["ARRIVED_SEC"] - report["calm_started_sec"]
    show("memory_high: pressure gone -> memory.high restored", calm_to_restore)

    assert report["initial_memory_high"][cgroup] == "max"
    assert applied["REMEDIATOR_BEFORE"] == "max"
    assert applied["REMEDIATOR_AFTER"] == str(expected)
    assert seen["set_here_after_write"] == str(expected)
    assert restored["REMEDIATOR_RESULT"] == "restored"
    assert seen["set_here_after_restore"] == "max"
    assert report["final_memory_high"][cgroup] == "max"
    # Restored because the calm lasted calm_sec, not earlier and not for another reason.
    assert calm_to_restore >= memory_high.CALM_SEC
    assert not records_of(records, RecordType.BACKED_OFF, cgroup), readable(records)


@pytest.mark.vm
def test_memory_high_is_declined_and_stays_max_where_unreclaimable_memory_leaves_no_room_above_the_floor(
    memory_high_boot: ScenarioBoot,
) -> None:
    report = memory_high_boot.report("memory_high")
    records = report["records"]
    cgroup = memory_high.NO_ROOM
    declined = only(
        records_of(records, RecordType.ACTION_DECLINED, cgroup, "memory_high"), "memory_high decline", records
    )

    # The setup: anon (no swap) + the floor margin is above memory.max.
    assert int(declined["REMEDIATOR_ANON"]) + memory_high.FLOOR_MARGIN > memory_high.MEMORY_MAX[cgroup]
    assert "leaves no room" in declined["MESSAGE"]
    assert not records_of(records, RecordType.ACTION_APPLIED, cgroup), readable(records)
    assert report["memory_high_seen"]["no_room_after_decline"] == "max"
    assert report["final_memory_high"][cgroup] == "max"


@pytest.mark.vm
def test_daemon_stands_back_when_another_writer_changes_memory_high_and_leaves_its_value_after_calm(
    memory_high_boot: ScenarioBoot,
) -> None:
    report = memory_high_boot.report("memory_high")
    records = report["records"]
    cgroup = memory_high.OTHER_WRITER
    ours = page_aligned_fraction(memory_high.MEMORY_MAX[cgroup], memory_high.FRACTION)
    stood_back = only(records_of(records, RecordType.STOOD_BACK, cgroup), "STOOD_BACK", records)

    assert report["memory_high_seen"]["other_writer_after_daemon_write"] == str(ours)
    assert stood_back["REMEDIATOR_MEMORY_HIGH"] == str(memory_high.OTHER_WRITERS_VALUE)
    restores = records_of(records, RecordType.ROLLED_BACK, cgroup)
    assert not [r for r in restores if r.get("REMEDIATOR_RESULT") == "restored"], readable(records)
    assert report["final_memory_high"][cgroup] == str(memory_high.OTHER_WRITERS_VALUE)


@pytest.mark.vm
def test_a_childs_own_memory_high_breaches_count_in_the_parents_memory_events_but_not_its_local_ones(
    memory_high_boot: ScenarioBoot,
) -> None:
    # The kernel fact behind the next test: memory.events is hierarchical, memory.events.local is not.
    report = memory_high_boot.report("child_high_events")

    assert report["clamped_to"] is not None, readable(report["records"])
    assert report["squeezed"]
    assert report["squeezed_events_local_after"]["high"] > 0
    assert report["events_after"]["high"] > report["events_at_clamp"]["high"]
    assert report["events_local_after"]["high"] == 0
    # The parent's memory.high (ours) never came near: it throttled nothing.
    assert report["peak_memory_current_after_clamp"] < int(report["clamped_to"])


@pytest.mark.vm
def test_a_childs_own_memory_high_breaches_do_not_make_the_daemon_back_off_the_parents_memory_high(
    memory_high_boot: ScenarioBoot,
) -> None:
    # Found by this suite: when the back-off read the hierarchical memory.events, this scenario
    # backed off 4 times out of 4 ("our 179.2 MiB is throttling it" with 33-38 MiB in use).
    report = memory_high_boot.report("child_high_events")
    records = report["records"]

    assert not records_of(records, RecordType.BACKED_OFF, child_high_events.APP), readable(records)
    assert report["memory_high_after"] == report["clamped_to"]


# ---- 5 and 6. watching: removed and new cgroups ------------------------------------------------------

# A daemon blocked in poll() uses no CPU; one spinning on a dead trigger fd would use all of the 3 s.
# Bounds for TCG, where even a few reads of /proc cost milliseconds.
IDLE_CPU_SEC_MAX = 0.15
IDLE_VOLUNTARY_SWITCHES_MAX = 20
# From mkdir to the WATCH_STARTED record: at most one rescan interval, plus the rescan's own work.
RESCAN_MARGIN_SEC = 1.5


@pytest.fixture(scope="module")
def watching_boot(vm_light: harness.LightVm, tmp_path_factory: pytest.TempPathFactory) -> ScenarioBoot:
    return boot_scenarios(
        vm_light, tmp_path_factory.mktemp("watching"), [("removed_cgroup", []), ("new_cgroups", [])]
    )


@pytest.mark.vm
def test_removed_cgroup_ends_its_watch_through_pollerr_without_busy_loop_or_error_records(
    watching_boot: ScenarioBoot,
) -> None:
    report = watching_boot.report("removed_cgroup")
    records = report["records"]
    cgroup = removed_cgroup.CGROUP
    ended = only(records_of(records, RecordType.WATCH_ENDED, cgroup), "WATCH_ENDED", records)
    usage = report["after_removal"]
    show(
        f"removed cgroup: daemon CPU over {usage['wall_sec']:g} s after rmdir "
        f"({usage['voluntary_switches']} voluntary switches)",
        usage["cpu_sec"],
    )
    idle = report["idle_before_removal"]
    show(
        f"removed cgroup: daemon CPU over {idle['wall_sec']:g} s idle before rmdir "
        f"({idle['voluntary_switches']} voluntary switches)",
        idle["cpu_sec"],
    )

    assert report["watch_mode"] == "armed"
    # "gone" is the POLLERR path (or a read finding the cgroup gone); a rescan would say "removed",
    # and the scenario's rescan interval is far beyond its end.
    assert ended["REMEDIATOR_RESULT"] == "gone"
    assert report["watch_ended_after_sec"] <= 5.0
    assert usage["cpu_sec"] < IDLE_CPU_SEC_MAX
    assert usage["voluntary_switches"] < IDLE_VOLUNTARY_SWITCHES_MAX
    assert report["daemon_alive"]
    assert not records_of(records, RecordType.ACTION_FAILED), readable(records)
    after_removal = [
        r
        for r in records
        if r["ARRIVED_SEC"] >= report["removed_at_sec"]
        and r["RECORD_TYPE"] not in ("WATCH_ENDED", "DAEMON_STOPPING")
    ]
    assert after_removal == [], readable(after_removal)


@pytest.mark.vm
def test_cgroups_created_after_start_are_watched_within_the_rescan_interval(
    watching_boot: ScenarioBoot,
) -> None:
    report = watching_boot.report("new_cgroups")
    interval = report["rescan_interval_sec"]
    seen = report["cgroups"]
    for cgroup in seen:
        print(f"new cgroup {cgroup['cgroup']}: watched after {cgroup['seconds_to_watch']} s")
    slowest = max(c["seconds_to_watch"] or float("inf") for c in seen)
    show(f"new cgroups: slowest mkdir -> WATCH_STARTED (rescan_interval_sec {interval:g})", slowest)

    assert len(seen) == len(new_cgroups.PAUSES_SEC)
    assert all(c["watch_mode"] == "armed" for c in seen), seen
    assert slowest <= interval + RESCAN_MARGIN_SEC


# ---- 7 and 8. dry-run, and recovery after kill -9 -------------------------------------------------


@pytest.fixture(scope="module")
def dry_run_and_crash_boot(
    vm_light: harness.LightVm, tmp_path_factory: pytest.TempPathFactory
) -> ScenarioBoot:
    return boot_scenarios(
        vm_light,
        tmp_path_factory.mktemp("dry-run-crash"),
        [("dry_run", [DRIVE]), ("crash_recovery", [])],
        dry_run.DISK_FILES_MIB,
    )


@pytest.mark.vm
def test_dry_run_against_the_real_kernel_changes_no_file_and_says_would(
    dry_run_and_crash_boot: ScenarioBoot,
) -> None:
    report = dry_run_and_crash_boot.report("dry_run")
    records = report["records"]
    before, after = report["before"], report["after"]
    acted = [r for r in records if r.get("REMEDIATOR_ACTION")]

    assert report["would_seen"] == dict.fromkeys(dry_run.RUNGS, True), readable(records)
    for record in records_of(records, RecordType.ACTION_APPLIED):
        assert record["REMEDIATOR_RESULT"] == "would"
        assert record["MESSAGE"].startswith("would "), record["MESSAGE"]
    assert acted and all(r["REMEDIATOR_DRY_RUN"] == "1" for r in acted)
    assert not [r for r in acted if r.get("REMEDIATOR_RESULT") in ("applied", "partial", "restored")]
    assert before["memory_high"] == after["memory_high"] == report["memory_high_after_stop"] == "max"
    # memory.reclaim of the "would reclaim" was not written: the reader's cache is all there.
    assert after["reader_file"] >= before["reader_file"] - MIB
    assert after["proc_sys_vm"] == before["proc_sys_vm"]
    assert "vfs_cache_pressure" in before["proc_sys_vm"]
    assert not report["state_file_existed_before_start"]
    assert not report["state_file_exists"], report["state_dir_entries"]


@pytest.mark.vm
def test_original_memory_high_comes_back_after_kill_9_and_restart(
    dry_run_and_crash_boot: ScenarioBoot,
) -> None:
    report = dry_run_and_crash_boot.report("crash_recovery")
    second = report["second_records"]
    clamped = page_aligned_fraction(crash_recovery.MEMORY_MAX, crash_recovery.FRACTION)
    recovered = only(
        records_of(second, RecordType.STATE_RECOVERED, crash_recovery.APP), "STATE_RECOVERED", second
    )
    state_before_kill = json.loads(report["state_file_before_kill"])

    assert report["original_memory_high"] == "max"
    assert report["clamped_to"] == str(clamped)
    assert report["memory_high_after_kill"] == str(clamped)
    assert [(e["cgroup"], e["original"], e["ours"]) for e in state_before_kill["entries"]] == [
        (crash_recovery.APP, "max", clamped)
    ]
    assert recovered["REMEDIATOR_RESULT"] == "restored"
    assert report["memory_high_after_restart"] == "max"
    assert json.loads(report["state_file_after_restart"])["entries"] == []
