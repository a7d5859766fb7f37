"""`remediator reload`: validate first, then signal only a verified daemon (issue 12 items 10, 15)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from remediator.commands.reload import run_reload
from remediator.daemon.pid_file import write_pid_file
from remediator.settings import Settings
from tests.unit.test_pid_file import _STAND_IN, wait_for_exec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "bin" / "remediator"
    script.parent.mkdir()
    script.write_text(_STAND_IN)
    proc = subprocess.Popen([sys.executable, str(script), "run"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def settings_for(tmp_path: Path, policies: Path) -> Settings:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700, exist_ok=True)
    return Settings(policies_dir=policies, state_file=state_dir / "state.json", proc_root=Path("/proc"))


def good_policies(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    return policies


def got_hup(proc: subprocess.Popen[str]) -> bool:
    assert proc.stdout is not None
    proc.kill()  # ends the stand-in so that reading its output cannot block
    return "hup" in proc.stdout.read()


def test_reload_of_valid_policies_signals_the_daemon_of_the_pid_file(
    tmp_path: Path, daemon: subprocess.Popen[str]
) -> None:
    settings = settings_for(tmp_path, good_policies(tmp_path))
    write_pid_file(settings.state_file.parent / "remediator.pid", pid=daemon.pid)
    err = io.StringIO()

    assert run_reload(settings, None, err) == 0

    assert err.getvalue() == ""
    assert daemon.stdout is not None and daemon.stdout.readline() == "hup\n"


def test_reload_of_an_invalid_policy_exits_1_with_the_errors_and_does_not_signal(
    tmp_path: Path, daemon: subprocess.Popen[str]
) -> None:
    policies = good_policies(tmp_path)
    (policies / "broken.yaml").write_text("target: {kind: cgroups, include: []}\nnonsense: 1\n")
    settings = settings_for(tmp_path, policies)
    err = io.StringIO()

    assert run_reload(settings, daemon.pid, err) == 1

    lines = err.getvalue().splitlines()
    assert any("broken.yaml:" in line for line in lines[:-1])
    assert lines[-1].startswith("remediator reload: ") and "not reloading" in lines[-1]
    assert not got_hup(daemon)


def test_reload_refuses_a_pid_that_only_mentions_remediator(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, good_policies(tmp_path))
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-u", "remediator"])
    try:
        wait_for_exec(bystander.pid, b"remediator")
        err = io.StringIO()
        assert run_reload(settings, bystander.pid, err) == 1
        assert f"PID {bystander.pid} is not a remediator daemon" in err.getvalue()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_reload_without_a_pid_file_says_where_it_looked(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, good_policies(tmp_path))
    err = io.StringIO()

    assert run_reload(settings, None, err) == 1

    pid_path = settings.state_file.parent / "remediator.pid"
    assert err.getvalue() == (
        f"remediator reload: cannot read the daemon's PID from {pid_path}: No such file or directory\n"
    )
