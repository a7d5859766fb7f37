"""The command line itself: usage errors, path arguments, closed pipes, escaped error lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from remediator.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_and_enforce_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--dry-run", "--enforce", "--once"]) == 2
    assert main(["run", "--enforce", "--dry-run", "--once"]) == 2
    err = capsys.readouterr().err
    assert "argument --enforce: not allowed with argument --dry-run" in err
    assert "argument --dry-run: not allowed with argument --enforce" in err


def test_path_flags_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(
        ["--policies", "p", "--cgroup-root", "c/g", "status", "--proc-root", "pr"]
    )
    assert (args.policies, args.cgroup_root, args.proc_root) == (
        tmp_path / "p",
        tmp_path / "c/g",
        tmp_path / "pr",
    )


@pytest.mark.parametrize("flag", ["--policies", "--cgroup-root", "--proc-root"])
def test_an_empty_path_flag_is_a_usage_error(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([flag, "", "check"]) == 2
    assert f"argument {flag}: must not be empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "message"), [("", "must not be empty"), ("etc/r.yaml", "must be an absolute")]
)
def test_an_empty_or_relative_remediator_config_is_refused(
    value: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REMEDIATOR_CONFIG", value)
    assert main(["check"]) == 1
    assert capsys.readouterr().err.startswith(f"env:REMEDIATOR_CONFIG: {message}")


def test_run_refuses_a_state_file_with_a_nul_byte_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "remediator.yaml"
    config.write_text('state_file: "/run/remediator/state\\0.json"\n')
    assert main(["--config", str(config), "run", "--once", "--dry-run"]) == 1
    assert capsys.readouterr().err == f"{config}:1:1: state_file: must not contain a NUL byte\n"


def test_settings_errors_are_printed_one_escaped_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "x\n\x1b[2Jremediator.yaml"
    assert main(["--config", str(config), "check"]) == 1
    err = capsys.readouterr().err
    assert err == f"{tmp_path}/x\\n\\x1b[2Jremediator.yaml:1:1: (file): settings file does not exist\n"


def test_a_closed_stdout_ends_quietly_without_a_traceback(tmp_path: Path) -> None:
    # `remediator check | head -1`: the reader is gone before the writer is done.
    config = tmp_path / "remediator.yaml"
    config.write_text("{}\n")
    argv = ["--policies", str(REPO / "policies"), "--config", str(config), "check"]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "remediator", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 1
