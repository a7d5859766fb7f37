"""The Debian 12 .deb installed on a real Debian 12 with systemd as PID 1 (the full VM of tests/vm).

One VM boot runs tests/packaging/vm_payload/run.sh, which installs the package with apt (offline),
exercises the service (reload, an invalid policy, pressure in dry-run, enforcing, remove, reinstall,
metrics scraped through Debian's node_exporter, a start with a broken policy, purge) and leaves its
observations in the payload folder; each test below asserts one behaviour on them.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

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
ID_STOPPING = "3e7827fd34e34bfc9748180b44ccb23c"
ID_PRESSURE = "66bb8b5887b94914b7821589ad9a6114"
POD_UID = "0b8c6e2a-1f3d-4c5e-9a7b-1234567890ab"
CONTAINER_ID = "3f9a6c0e5b7d4e21a8c9f0b1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1"
PRESSURED_SERVICE = "system.slice/vm-pressured.service"
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
DECLINE_REASONS = {
    "floor",
    "not_reclaimable",
    "cooldown",
    "rate_limit",
    "other_writer",
    "no_kernel_support",
    "conditions",
    "backed_off",
    "not_allowed",
    "ladder_exhausted",
    "other",
}


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

    def daemon_records(self) -> List[Dict[str, str]]:
        """remediator's structured records (sent to the journal), not its processes' stderr lines."""
        return [
            record
            for record in self.records
            if record.get("SYSLOG_IDENTIFIER") == "remediator" and record.get("_TRANSPORT") == "journal"
        ]

    def stderr_lines(self) -> List[str]:
        """What remediator's processes (the daemon, `remediator reload` of ExecReload=) wrote on stderr."""
        return [
            record["MESSAGE"]
            for record in self.records
            if record.get("SYSLOG_IDENTIFIER") == "remediator" and record.get("_TRANSPORT") == "stdout"
        ]


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
    # README (Commands, reload): `remediator reload` validates first; an invalid set exits 1 with every
    # error on stderr and signals nothing, so `systemctl reload` fails and the daemon keeps its set.
    assert vm_run.values.get("reload_with_broken_policy_rc") not in (None, "0"), vm_run.describe()
    assert "Job for remediator.service failed" in (vm_run.payload / "reload-broken.stderr").read_text()
    vm_run.require(
        "reload_with_broken_policy_failed",
        "rejected_set_not_reloaded",
        "daemon_not_signalled",
        "active_after_rejected_reload",
        "same_pid_after_rejected_reload",
    )
    # The errors are in the unit's journal, as the reload's stderr lines (no MESSAGE_ID: not a record).
    stderr = vm_run.stderr_lines()
    assert any(
        re.search(r"\S*policies\.d/broken\.yaml:\d+:\d+: trigger\.pressure: ", line) for line in stderr
    ), stderr
    assert any("not reloading; the daemon keeps the policies it runs" in line for line in stderr), stderr
    # The daemon was never signalled: no "rejected on reload" record (later starts with the file reject it
    # as a start does).
    on_reload = [
        record["MESSAGE"] for record in vm_run.records_of(ID_REJECTED) if "on reload" in record["MESSAGE"]
    ]
    assert on_reload == [], on_reload
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
    # The daemon's records; the lines its processes write on stderr (`remediator reload`'s errors, a
    # refused start) are not records and carry no MESSAGE_ID (README, Commands and Journal records).
    ours = vm_run.daemon_records()
    assert ours, vm_run.describe()
    for record in ours:
        missing = [field for field in COMMON_FIELDS if field not in record]
        assert not missing, f"{record.get('MESSAGE')}: missing {missing}"
    for record in vm_run.records_of(ID_APPLIED):
        missing = [field for field in ACTION_FIELDS if field not in record]
        assert not missing, f"{record['MESSAGE']}: missing {missing}"
    # Declines carry their reason, from the metric's fixed label set (README, Journal records). Whether
    # a run declines anything depends on how the pressure went (one run had three, the next none).
    declined = [record for record in ours if record.get("REMEDIATOR_RESULT") == "declined"]
    for record in declined:
        assert record.get("REMEDIATOR_REASON") in DECLINE_REASONS, record
    # A coalesced summary says how many records it stands for (remediator/daemon/coalesce.py).
    for record in ours:
        if "REMEDIATOR_REPEATED" in record:
            assert record["REMEDIATOR_REPEATED"].isdigit() and "REMEDIATOR_REPEATED_SEC" in record, record
            assert re.search(r"\(repeated \d+ more times in \d+ s\)$", record["MESSAGE"]), record["MESSAGE"]


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


# --- issue 14: the metrics file served by Debian's node_exporter (run.sh, section 10) ---------------

Series = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def _scraped(vm_run: VmRun, name: str) -> Series:
    """remediator's series (and node_exporter's textfile ones) of one scrape of :9100/metrics."""
    page = (vm_run.payload / name).read_text()
    ours = "\n".join(line for line in page.splitlines() if "remediator" in line or "node_textfile" in line)
    series: Series = {}
    for family in text_string_to_metric_families(ours + "\n"):
        for sample in family.samples:
            series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return series


def _select(series: Series, name: str, **labels: str) -> Dict[Tuple[Tuple[str, str], ...], float]:
    return {
        key: value
        for (metric, key), value in series.items()
        if metric == name and all((label, wanted) in key for label, wanted in labels.items())
    }


def _total(series: Series, name: str, **labels: str) -> float:
    return sum(_select(series, name, **labels).values())


def _counted(record: Dict[str, str]) -> int:
    # A coalesced summary stands for REMEDIATOR_REPEATED records; every other record for itself.
    return int(record.get("REMEDIATOR_REPEATED", "1"))


def _metrics_run_records(vm_run: VmRun) -> List[Dict[str, str]]:
    pid = vm_run.values.get("metrics_pid")
    return [record for record in vm_run.daemon_records() if record.get("_PID") == pid]


def test_node_exporter_serves_the_metrics_file(vm_run: VmRun) -> None:
    vm_run.require(
        "node_exporter_started", "metrics_daemon_active", "scrape_before", "scrape_during", "scrape_after"
    )
    after = _scraped(vm_run, "scrape-after.txt")
    # node_exporter read the file without error; its mtime is the freshness README's alert uses.
    assert _total(after, "node_textfile_scrape_error") == 0
    assert [
        key for key in _select(after, "node_textfile_mtime_seconds") if "remediator.prom" in dict(key)["file"]
    ]
    build = _select(after, "remediator_build_info")
    assert list(build.values()) == [1.0], build
    assert _total(after, "remediator_dry_run") == 0  # enforcing
    assert vm_run.values.get("textfile_mode") == "644"


def test_scraped_counters_move_with_the_actions_taken(vm_run: VmRun) -> None:
    vm_run.require("service_reclaimed", "container_reclaimed", "scrape_during", "scrape_after")
    before, during, after = (
        _scraped(vm_run, name) for name in ("scrape-before.txt", "scrape-during.txt", "scrape-after.txt")
    )
    applied = {"name": "remediator_actions_total", "policy": "services-cache", "action": "reclaim"}
    name = applied.pop("name")
    assert _total(before, name, **applied, result="applied") == 0, _select(before, name)
    assert (
        0
        < _total(during, name, **applied, result="applied")
        <= _total(after, name, **applied, result="applied")
    )
    assert _total(after, "remediator_reclaimed_bytes_total", policy="services-cache") > 0
    assert _total(after, "remediator_pressure_events_total", policy="services-cache") > 0
    # While under action, the container's pressure is a series named by its pod, from /var/log/pods.
    pod = {"namespace": "shop", "pod": "web-0", "container": "app", "pod_uid": POD_UID}
    assert _select(
        during, "remediator_cgroup_full_pressure_avg10", cgroup=vm_run.values["kube_cgroup"], **pod
    )
    assert _select(during, "remediator_cgroup_full_pressure_avg10", cgroup=PRESSURED_SERVICE, pod="")

    # The counters at stop are exactly what this process's journal records say it did (a coalesced
    # summary counts for the records it stands for): reclaims by result, declines by action and reason,
    # confirmed pressure.
    records = [
        record
        for record in _metrics_run_records(vm_run)
        if record.get("REMEDIATOR_POLICY") == "services-cache"
    ]
    assert records, vm_run.describe()
    journal_reclaims: Counter[str] = Counter()
    journal_declines: Counter[Tuple[str, str]] = Counter()
    journal_pressure = 0
    for record in records:
        result = record.get("REMEDIATOR_RESULT", "")
        if record.get("MESSAGE_ID") == ID_PRESSURE:
            journal_pressure += _counted(record)
        elif result == "declined":
            journal_declines[(record.get("REMEDIATOR_ACTION", ""), record["REMEDIATOR_REASON"])] += _counted(
                record
            )
        elif record.get("REMEDIATOR_ACTION") == "reclaim" and result:  # not the escalations after it
            journal_reclaims[result] += _counted(record)
    scraped_reclaims = {
        dict(key)["result"]: value
        for key, value in _select(after, "remediator_actions_total", **applied, dry_run="0").items()
    }
    assert scraped_reclaims == {result: float(n) for result, n in journal_reclaims.items()}
    scraped_declines = {
        (dict(key)["action"], dict(key)["reason"]): value
        for key, value in _select(after, "remediator_declines_total", policy="services-cache").items()
    }
    assert scraped_declines == {key: float(n) for key, n in journal_declines.items()}
    assert _total(after, "remediator_pressure_events_total", policy="services-cache") == journal_pressure


def test_records_of_a_service_and_a_container_carry_their_identity(vm_run: VmRun) -> None:
    vm_run.require("service_reclaimed", "container_reclaimed")
    records = _metrics_run_records(vm_run)
    service = [record for record in records if record.get("REMEDIATOR_CGROUP") == PRESSURED_SERVICE]
    assert service and all(record.get("REMEDIATOR_UNIT") == "vm-pressured.service" for record in service)
    kube_cgroup = vm_run.values["kube_cgroup"]
    container = [record for record in records if record.get("REMEDIATOR_CGROUP") == kube_cgroup]
    assert container, vm_run.describe()
    expected = {
        "REMEDIATOR_POD_UID": POD_UID,
        "REMEDIATOR_QOS_CLASS": "burstable",
        "REMEDIATOR_CONTAINER_ID": CONTAINER_ID,
        "REMEDIATOR_CONTAINER_RUNTIME": "containerd",
        "REMEDIATOR_POD_NAMESPACE": "shop",
        "REMEDIATOR_POD_NAME": "web-0",
        "REMEDIATOR_CONTAINER_NAME": "app",
    }
    for record in container:
        assert {field: record.get(field) for field in expected} == expected, record["MESSAGE"]


# --- issue 12 item 9: a start with a broken policy file (run.sh, section 11) -----------------------


def test_start_with_a_broken_policy_runs_the_last_valid_set_degraded(vm_run: VmRun) -> None:
    vm_run.require("degraded_kept_set_exists", "degraded_active")
    assert vm_run.values.get("start_degraded_rc") == "0", vm_run.describe("start-degraded.stderr")
    status = vm_run.values["status_text_degraded"]
    assert re.match(
        r"DEGRADED: running the last valid policies; \S*policies\.d/broken\.yaml:\d+:\d+: "
        r"trigger\.pressure: ",
        status,
    ), status
    # The same policies run as before the file broke: the count in STATUS= is the enforcing run's.
    running = re.search(r"\((enforcing: \d+ polic(?:y|ies)),", status)
    assert running and vm_run.values["status_text_enforcing"].startswith(running.group(1)), (
        status,
        vm_run.values["status_text_enforcing"],
    )
    assert (
        'Status: "DEGRADED: running the last valid policies;'
        in (vm_run.payload / "status-degraded.txt").read_text()
    )
    pid = vm_run.values["degraded_pid"]
    degraded = [
        record
        for record in vm_run.daemon_records()
        if record.get("_PID") == pid and record.get("REMEDIATOR_RESULT") == "degraded"
    ]
    assert len(degraded) == 1, vm_run.describe()
    assert degraded[0]["PRIORITY"] == "3"
    assert degraded[0]["MESSAGE_ID"] == ID_REJECTED
    assert "services-cache" in degraded[0]["MESSAGE"] and "vm-victim" in degraded[0]["MESSAGE"]


def test_start_with_a_broken_policy_and_no_kept_set_is_refused_with_the_errors(vm_run: VmRun) -> None:
    vm_run.require("refused_start_failed", "refused_not_active")
    refused = [
        record
        for record in vm_run.records_of(ID_STOPPING)
        if record.get("REMEDIATOR_RESULT") == "refused" and record.get("_TRANSPORT") == "journal"
    ]
    assert refused, vm_run.describe("start-refused.stderr")
    assert refused[0]["PRIORITY"] == "3"
    located = re.compile(r"\S*policies\.d/broken\.yaml:\d+:\d+: trigger\.pressure: ")
    assert located.search(refused[0]["MESSAGE"]) and "refusing to start" in refused[0]["MESSAGE"], refused[0]
    # Every error as its own record, and the refusal on the daemon's stderr (the unit's journal).
    pid = refused[0]["_PID"]
    rejected = [record for record in vm_run.records_of(ID_REJECTED) if record.get("_PID") == pid]
    assert any(located.search(record["MESSAGE"]) for record in rejected), rejected
    stderr = [line for line in vm_run.stderr_lines() if line.startswith("remediator: refusing to start:")]
    assert stderr and located.search(stderr[0]), vm_run.stderr_lines()
