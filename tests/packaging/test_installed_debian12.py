"""The Debian 12 .deb installed on a real Debian 12 with systemd as PID 1 (the full VM of tests/vm).

One VM boot runs tests/packaging/vm_payload/run.sh, which installs the package with apt (offline),
exercises the service (reload, an invalid policy, pressure in dry-run, enforcing, remove, reinstall,
purge) and leaves its observations in the payload folder; each test below asserts one behaviour on them.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

from tests.packaging.conftest import SUMMARY_LINES
from tests.packaging.host_tools import unavailable
from tests.vm import harness

pytestmark = pytest.mark.vmfull

PAYLOAD_SOURCE = Path(__file__).resolve().parent / "vm_payload"
VM_TIMEOUT_SEC = 900.0
VICTIM = "remediator-vm-victim"

ID_STARTED = "275eacdb5c0945c88ddb91a6b99e7a7b"
ID_RELOADED = "f967dc4d746b4d2b96e508d6c4c04e88"
ID_REJECTED = "068bc504ce4543c582b3fdcc524ba28a"
ID_APPLIED = "7c7191e7214b443bb078acbd0a13f832"
ID_RESTORED = "67fe14691bec4a869cba9e9bed40b846"
# Fields every remediator record carries (README, "Journal records").
COMMON_FIELDS = ("MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "REMEDIATOR_DRY_RUN")
# What an action record says about the action and its target, and the evidence it was decided on.
ACTION_FIELDS = (
    "REMEDIATOR_POLICY",
    "REMEDIATOR_CGROUP",
    "REMEDIATOR_ACTION",
    "REMEDIATOR_RESULT",
    "REMEDIATOR_MEMORY_CURRENT",
    "REMEDIATOR_MEMORY_MAX",
    "REMEDIATOR_FILE",
    "REMEDIATOR_ANON",
    "REMEDIATOR_SOME_AVG10",
)


@dataclass(frozen=True)
class VmRun:
    result: harness.VmResult
    payload: Path
    checks: Dict[str, bool]
    values: Dict[str, str]
    records: List[Dict[str, str]]

    def describe(self, *files: str) -> str:
        parts = [self.result.describe(40)]
        for name in ("run.log", *files):
            path = self.payload / name
            if path.is_file():
                parts.append(f"--- {name} (tail) ---\n" + "\n".join(path.read_text().splitlines()[-60:]))
        return "\n".join(parts)

    def require(self, *names: str) -> None:
        failed = [name for name in names if not self.checks.get(name, False)]
        assert not failed, f"VM checks failed or missing: {failed}\n{self.describe()}"

    def records_of(self, message_id: str) -> List[Dict[str, str]]:
        return [record for record in self.records if record.get("MESSAGE_ID") == message_id]


def _read_records(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            # journalctl -o json gives binary-unsafe values as byte arrays; ours are all text.
            records.append({key: value for key, value in entry.items() if isinstance(value, str)})
    return records


@pytest.fixture(scope="module")
def vm_run(built_packages: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> VmRun:
    try:
        vm = harness.FullVm(harness.ensure_light(), harness.ensure_full_image())
    except harness.VmUnavailable as exc:
        unavailable(f"VM unavailable: {exc.reason}")
    payload = tmp_path_factory.mktemp("vm-payload")
    for source in PAYLOAD_SOURCE.iterdir():
        shutil.copy(source, payload / source.name)
    shutil.copy(built_packages["debian12"], payload / built_packages["debian12"].name)
    started = time.monotonic()
    result = vm.boot(payload, timeout_sec=VM_TIMEOUT_SEC)
    SUMMARY_LINES.append(f"Debian 12 VM install test (boot to power-off): {time.monotonic() - started:.1f}s")
    checks: Dict[str, bool] = {}
    checks_file = payload / "checks.txt"
    for line in checks_file.read_text().splitlines() if checks_file.is_file() else []:
        name, _, verdict = line.partition(" ")
        checks[name] = verdict == "ok"
    values: Dict[str, str] = {}
    values_file = payload / "values.txt"
    for line in values_file.read_text().splitlines() if values_file.is_file() else []:
        key, _, value = line.partition(" ")
        values[key] = value
    run = VmRun(result, payload, checks, values, _read_records(payload / "remediator-journal-all.json"))
    assert result.exit_code == 0 and checks, run.describe()
    return run


def test_apt_installs_the_deb_offline_with_the_images_packages(vm_run: VmRun) -> None:
    vm_run.require("installed_with_apt", "launcher_runs", "cli_check_of_shipped_config")


def test_service_is_enabled_and_becomes_active_with_ready(vm_run: VmRun) -> None:
    # Type=notify: `active` means systemd got READY=1.
    vm_run.require("unit_enabled", "unit_active", "started_record")
    show = (vm_run.payload / "show-after-install.txt").read_text()
    assert "Type=notify" in show
    assert "ActiveState=active" in show
    assert vm_run.values.get("n_restarts") == "0", vm_run.describe("status-after-install.txt")


def test_started_in_dry_run_as_shipped(vm_run: VmRun) -> None:
    started = vm_run.records_of(ID_STARTED)
    assert started, vm_run.describe()
    assert started[0]["REMEDIATOR_DRY_RUN"] == "1"


def test_daemon_memory_is_protected_by_its_cgroup_and_its_parent(vm_run: VmRun) -> None:
    vm_run.require("memory_protected")
    assert vm_run.values["daemon_cgroup"].endswith("/remediator.slice/remediator.service")


def test_postinst_compiles_byte_code_and_indexes_the_catalog(vm_run: VmRun) -> None:
    vm_run.require("bytecode_compiled", "catalog_indexed")


def test_sandbox_lets_the_daemon_write_only_cgroups_and_vm_sysctls(vm_run: VmRun) -> None:
    vm_run.require(
        "sandbox_vm_sysctl_writable",
        "sandbox_cgroup_writable",
        "sandbox_kernel_sysctl_read_only",
        "sandbox_etc_read_only",
        "sandbox_state_dir_private",
    )


def test_systemctl_reload_reloads_policies_in_the_same_process(vm_run: VmRun) -> None:
    vm_run.require("reload_command", "reload_record", "active_after_reload", "same_pid_after_reload")
    loaded = [record for record in vm_run.records if record.get("REMEDIATOR_POLICY") == "vm-victim"]
    assert loaded, "the reload did not load the new policy"


def test_invalid_policy_reload_is_refused_and_old_policies_keep_running(vm_run: VmRun) -> None:
    vm_run.require("rejection_record", "rejected_set_not_reloaded", "active_after_rejected_reload")
    rejected = vm_run.records_of(ID_REJECTED)
    assert any(
        "broken.yaml" in record["MESSAGE"] and "pressure" in record["MESSAGE"] for record in rejected
    ), [record["MESSAGE"] for record in rejected]
    # The policy loaded before the refused reload acted afterwards: the old set kept running.
    vm_run.require("dry_run_record")


def test_cgroup_under_pressure_gets_a_dry_run_record_of_what_would_be_done(vm_run: VmRun) -> None:
    vm_run.require("dry_run_record", "dry_run_wrote_nothing")
    would = [
        record
        for record in vm_run.records_of(ID_APPLIED)
        if record.get("REMEDIATOR_DRY_RUN") == "1" and record.get("REMEDIATOR_CGROUP") == VICTIM
    ]
    assert would, vm_run.describe()
    assert would[0]["REMEDIATOR_RESULT"] == "would"
    assert would[0]["MESSAGE"].startswith("would"), would[0]["MESSAGE"]


def test_records_carry_the_documented_fields(vm_run: VmRun) -> None:
    ours = [record for record in vm_run.records if record.get("SYSLOG_IDENTIFIER") == "remediator"]
    assert ours, vm_run.describe()
    for record in ours:
        missing = [field for field in COMMON_FIELDS if field not in record]
        assert not missing, f"{record.get('MESSAGE')}: missing {missing}"
    for record in vm_run.records_of(ID_APPLIED):
        missing = [field for field in ACTION_FIELDS if field not in record]
        assert not missing, f"{record['MESSAGE']}: missing {missing}"


def test_records_carry_no_code_location_of_the_journal_writer(vm_run: VmRun) -> None:
    # python-systemd's send() added CODE_FILE=.../journal.py CODE_LINE=244 to every record (issue 12).
    ours = [record for record in vm_run.records if record.get("SYSLOG_IDENTIFIER") == "remediator"]
    assert ours, vm_run.describe()
    located = [record for record in ours if {"CODE_FILE", "CODE_LINE", "CODE_FUNC"} & set(record)]
    assert located == [], located[:1]


@pytest.mark.parametrize(
    ("query_file", "field", "value"),
    [
        ("readme-query-memory-high.json", "REMEDIATOR_ACTION", "memory_high"),
        ("readme-query-would.json", "REMEDIATOR_RESULT", "would"),
    ],
)
def test_readme_journal_queries_select_exactly_those_records(
    vm_run: VmRun, query_file: str, field: str, value: str
) -> None:
    # `journalctl -u remediator FIELD=value`, as README.md ("Install on a node") shows it.
    selected = _read_records(vm_run.payload / query_file)
    assert selected, f"{query_file}: nothing selected\n{vm_run.describe()}"
    assert all(record.get(field) == value for record in selected), [record.get(field) for record in selected]


def test_journalctl_x_shows_the_catalog_text(vm_run: VmRun) -> None:
    text = (vm_run.payload / "remediator-journal-x.txt").read_text()
    assert "Subject: remediator started" in text, text[-3000:]
    assert "Support: man:remediator(8)" in text


def test_enforcing_clamps_memory_high_of_the_cgroup_under_pressure(vm_run: VmRun) -> None:
    vm_run.require(
        "switched_to_enforcing", "active_enforcing", "enforcing_clamped_memory_high", "applied_record"
    )
    assert vm_run.values["victim_memory_high_clamped"].isdigit()


def test_apt_remove_stops_the_service_and_leaves_no_clamp(vm_run: VmRun) -> None:
    assert vm_run.values.get("apt_remove_rc") == "0", vm_run.describe("apt-remove.log")
    vm_run.require(
        "remove_stopped_service",
        "remove_restored_memory_high",
        "stopping_record",
        "restore_record",
        "remove_left_no_files",
    )
    # The clamp was still in place when the removal began (or the test would prove nothing).
    assert vm_run.values.get("victim_memory_high_before_remove", "max").isdigit(), vm_run.values
    restored = [
        record for record in vm_run.records_of(ID_RESTORED) if record.get("REMEDIATOR_CGROUP") == VICTIM
    ]
    assert restored and restored[-1]["REMEDIATOR_AFTER"] == "max", restored


def test_reinstall_keeps_an_edited_policy_file(vm_run: VmRun) -> None:
    assert vm_run.values.get("apt_reinstall_rc") == "0", vm_run.describe("apt-reinstall.log")
    vm_run.require("remove_kept_configuration", "reinstall_kept_edited_policy", "reinstall_kept_settings")
    vm_run.require("reinstall_active")


def test_purge_removes_the_configuration(vm_run: VmRun) -> None:
    assert vm_run.values.get("apt_purge_rc") == "0", vm_run.describe("apt-purge.log")
    vm_run.require("purge_removed_configuration", "purge_stopped_service")
