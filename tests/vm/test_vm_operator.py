"""An operator under systemd (full VM): reload with a broken policy; no journald (issue 12 items 10, 13)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import pytest

from remediator.daemon.journal import LOG_TARGET_CHANGED_MESSAGE_ID
from tests.vm import harness
from tests.vm.scenarios_operator import __file__ as _scenarios_init
from tests.vm.test_vm_faults import journald_payload

pytestmark = pytest.mark.vm

SCENARIO = Path(_scenarios_init).resolve().parent / "reload_and_no_journald.sh"


def _pairs(path: Path) -> Dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)


@pytest.mark.vmfull
def test_systemctl_reload_fails_on_a_broken_policy_and_records_go_to_stderr_without_journald(
    vm_full: harness.FullVm, tmp_path: Path
) -> None:
    payload = journald_payload(tmp_path / "payload")
    shutil.copy(SCENARIO, payload / "run.sh")

    result = vm_full.boot(payload, timeout_sec=900)

    assert result.exit_code == 0, result.describe()
    # Item 10: `systemctl reload` fails visibly, the daemon is not signalled and keeps running.
    assert (payload / "reload-broken.rc").read_text().strip() != "0", result.describe()
    assert (payload / "reload-fixed.rc").read_text().strip() == "0", result.describe()
    reloads = {step: int(count) for step, count in _pairs(payload / "hups.txt").items()}
    assert reloads["after-broken"] == reloads["start"], "the broken set reached the daemon"
    assert reloads["after-fixed"] == reloads["start"] + 1
    show = dict(line.split("=", 1) for line in (payload / "show.txt").read_text().splitlines() if "=" in line)
    assert show == {"ActiveState": "active", "NRestarts": "0"}
    # Item 13: with journald gone, one notice says so at start and the records are on stderr.
    assert (payload / "nojournal.rc").read_text().strip() == "0"
    stderr = (payload / "nojournal.stderr").read_text().splitlines()
    notices = [line for line in stderr if f"MESSAGE_ID={LOG_TARGET_CHANGED_MESSAGE_ID}" in line]
    assert len(notices) == 1, stderr
    assert (
        "journal unreachable (/run/systemd/journal/socket: No such file or directory (ENOENT))" in notices[0]
    )
    assert stderr.index(notices[0]) == 0
    assert any("MESSAGE_ID=275eacdb5c0945c88ddb91a6b99e7a7b" in line for line in stderr), "no start record"
