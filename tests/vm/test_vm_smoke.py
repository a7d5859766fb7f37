"""Smoke tests of the VM harness on a real kernel: the guarantees other VM tests build on.

Each light test boots one VM (a few seconds under TCG); the full test boots
Debian with systemd once. Durations are printed in the "VM timings" section.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.vm import harness

pytestmark = pytest.mark.vm

LIGHT_TIMEOUT_SEC = 60.0
PYTHON = shlex.quote(sys.executable)


def _run_probe(vm_light: harness.LightVm, probe: str, out_dir: Path) -> Dict[str, Any]:
    result = vm_light.boot(
        f"{PYTHON} -m tests.vm.probes.{probe} {harness.GUEST_OUT_DIR}/{probe}.json",
        timeout_sec=LIGHT_TIMEOUT_SEC,
        out_dir=out_dir,
    )
    print(f"{probe}: {result.elapsed:.1f}s")
    assert result.exit_code == 0, result.describe()
    report: Dict[str, Any] = json.loads((out_dir / f"{probe}.json").read_text())
    return report


def test_light_vm_has_cgroup2_with_memory_controller_psi_and_memory_reclaim(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    report = _run_probe(vm_light, "kernel_layout", tmp_path)

    assert report["cgroup_fs"] == "cgroup2"
    assert "memory" in report["controllers"].split()
    assert set(report["subtree_control"].split()) >= {"memory", "cpu", "io", "pids"}
    assert report["proc_pressure_memory"].startswith("some avg10=")
    assert report["child_has_memory_pressure"]
    assert report["child_has_memory_reclaim"]
    # EAGAIN is memory.reclaim's "took less than asked": the file works either way.
    assert report["reclaim_write_error"] in (None, "EAGAIN")


def test_light_vm_runs_the_command_in_a_read_only_host_root_with_the_documented_environment(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    report = _run_probe(vm_light, "kernel_layout", tmp_path)

    assert report["root_write_error"] == "EROFS"
    assert report["environment"] == {
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "VM_OUT": harness.GUEST_OUT_DIR,
    }
    assert report["cwd"] == str(harness.REPO_ROOT)
    assert report["swap_devices"] == 0


def test_psi_trigger_with_trailing_nul_is_accepted_and_fires_when_memory_high_squeezes_anon(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    report = _run_probe(vm_light, "psi_trigger", tmp_path)
    print(f"PSI trigger fired after {report.get('seconds_to_event')}s")

    assert report["trigger_error"] is None
    assert not report["pollerr"]
    assert report["fired"], report


def test_host_folder_under_tmp_that_the_command_needs_is_bound_into_the_guest(
    vm_light: harness.LightVm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands for a CI clone or venv under the host's /tmp, which the guest's tmpfs /tmp would hide.
    needed = tmp_path / "clone"
    needed.mkdir()
    (needed / "marker.txt").write_text("visible\n")
    monkeypatch.setattr(harness, "_paths_the_command_needs", lambda: [needed])
    out_dir = tmp_path / "out"

    result = vm_light.boot(
        f"cp {shlex.quote(str(needed))}/marker.txt /out/ && touch /tmp/scratch-is-writable",
        timeout_sec=LIGHT_TIMEOUT_SEC,
        out_dir=out_dir,
    )

    assert result.exit_code == 0, result.describe()
    assert (out_dir / "marker.txt").read_text() == "visible\n"


def test_guest_exit_code_comes_back_through_the_share_and_the_console_marker(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    result = vm_light.boot(
        "echo hello from the guest; exit 7", timeout_sec=LIGHT_TIMEOUT_SEC, out_dir=tmp_path
    )

    assert result.exit_code == 7, result.describe()
    assert not result.timed_out
    assert (tmp_path / harness.EXIT_CODE_FILE).read_text().strip() == "7"
    assert "hello from the guest" in result.log
    assert "\x00" not in result.log
    assert (tmp_path / harness.CONSOLE_LOG_FILE).read_text() == result.log


def test_guest_watchdog_powers_off_a_command_that_overruns_its_time(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    result = vm_light.boot("sleep 600", timeout_sec=LIGHT_TIMEOUT_SEC, out_dir=tmp_path, guest_limit_sec=2)

    assert result.timed_out, result.describe()
    assert result.guest_timed_out, result.describe()
    assert result.exit_code is None


def test_host_timeout_kills_qemu_and_reports_timed_out_without_exit_code(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    # The guest's own watchdog is set far beyond the host's limit, so only the host can stop this VM.
    result = vm_light.boot("sleep 600", timeout_sec=3, out_dir=tmp_path, guest_limit_sec=3600)

    assert result.timed_out
    assert not result.guest_timed_out
    assert result.exit_code is None
    assert "host timeout" in result.log


def test_extra_drive_is_attached_as_vdb_and_its_ext4_files_are_readable(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "hello.txt").write_text("from the host image\n")
    image = harness.make_ext4_image(tmp_path / "disk.raw", 16, files_dir=files)
    out_dir = tmp_path / "out"

    result = vm_light.boot(
        "mkdir /tmp/disk && mount -t ext4 -o ro /dev/vdb /tmp/disk && cp /tmp/disk/hello.txt /out/seen.txt",
        timeout_sec=LIGHT_TIMEOUT_SEC,
        drives=[image],
        out_dir=out_dir,
    )

    assert result.exit_code == 0, result.describe()
    assert (out_dir / "seen.txt").read_text() == "from the host image\n"


FULL_PAYLOAD = """\
echo "payload ran under $(cat /proc/1/comm)"
cat /proc/1/comm > pid1.txt
systemctl is-system-running > state.txt || true
python3 -c 'import systemd.journal, yaml, venv; print("imports ok")' > imports.txt 2>&1
exit 3
"""


def _journal_entries(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.vmfull
def test_full_vm_boots_systemd_runs_the_test_unit_and_returns_its_exit_code_and_journal(
    vm_full: harness.FullVm, tmp_path: Path
) -> None:
    (tmp_path / "run.sh").write_text(FULL_PAYLOAD)

    result = vm_full.boot(tmp_path, timeout_sec=240)
    print(f"full VM: {result.elapsed:.1f}s")

    assert result.exit_code == 3, result.describe()
    assert (tmp_path / "pid1.txt").read_text().strip() == "systemd"
    assert (tmp_path / "imports.txt").read_text().strip() == "imports ok"
    assert (tmp_path / "state.txt").read_text().strip() in ("running", "degraded")
    entries = _journal_entries(tmp_path / harness.JOURNAL_FILE)
    unit_messages = [
        entry.get("MESSAGE") for entry in entries if entry.get("_SYSTEMD_UNIT") == harness.TEST_UNIT
    ]
    assert "payload ran under systemd" in unit_messages
