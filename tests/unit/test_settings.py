"""Settings: precedence (flag > env > file > default) and located errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from remediator.settings import Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parent.parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "remediator.yaml"
    path.write_text(text)
    return path


def error_lines(
    config: Path,
    explicit: bool = True,
    overrides: Optional[Dict[str, Any]] = None,
    environ: Optional[Dict[str, str]] = None,
) -> List[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(config, explicit, overrides or {}, environ or {})
    return [str(issue) for issue in caught.value.issues]


def test_defaults_apply_when_nothing_is_set(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "absent.yaml", False, {}, {})

    assert settings == Settings()
    assert settings.dry_run is False
    assert settings.policies_dir == Path("/etc/remediator/policies.d")
    assert settings.state_file == Path("/run/remediator/state.json")
    assert settings.cgroup_root == Path("/sys/fs/cgroup")
    assert settings.proc_root == Path("/proc")
    assert settings.rescan_interval_sec == 10.0
    assert settings.sampling_interval_sec == 2.0
    assert settings.node_actions_max_per_hour == 4
    assert settings.log_target == "auto"
    assert settings.write_retry_budget_sec == 2.0


@pytest.mark.parametrize(
    ("in_file", "in_env", "in_flags", "expected"),
    [
        (None, None, None, 10.0),
        (20, None, None, 20.0),
        (20, "30", None, 30.0),
        (20, "30", 40, 40.0),
        (None, "30", 40, 40.0),
        (20, None, 40, 40.0),
    ],
)
def test_flag_beats_environment_beats_file_beats_default(
    tmp_path: Path, in_file: Optional[int], in_env: Optional[str], in_flags: Optional[int], expected: float
) -> None:
    config = write(tmp_path, f"rescan_interval_sec: {in_file}\n" if in_file is not None else "")
    environ = {"REMEDIATOR_RESCAN_INTERVAL_SEC": in_env} if in_env is not None else {}
    overrides = {"rescan_interval_sec": in_flags}

    settings = load_settings(config, True, overrides, environ)

    assert settings.rescan_interval_sec == expected


def test_sources_merge_field_by_field(tmp_path: Path) -> None:
    config = write(tmp_path, "dry_run: true\nlog_target: journal\n")

    settings = load_settings(
        config, True, {"cgroup_root": Path("/host/sys/fs/cgroup")}, {"REMEDIATOR_DRY_RUN": "0"}
    )

    assert settings.dry_run is False
    assert settings.log_target == "journal"
    assert settings.cgroup_root == Path("/host/sys/fs/cgroup")


def test_an_explicitly_named_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    assert error_lines(missing) == [f"{missing}:1:1: (file): settings file does not exist"]


def test_the_default_file_missing_means_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "nope.yaml", False, {}, {}) == Settings()


def test_a_file_of_only_comments_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# nothing set\n"), True, {}, {}) == Settings()


def test_file_errors_are_located_by_line_and_column(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "# settings\ndry_run: yes\nrescan_interval_sec: 500\nlog_target: journald\npolicy_dir: /etc/p\n",
    )

    assert error_lines(config) == [
        f"{config}:2:10: dry_run: 'yes' is ambiguous in YAML 1.1 (read as true): write true, "
        "or quote it if a string is meant",
        f"{config}:3:1: rescan_interval_sec: must be <= 300 (got 500)",
        f"{config}:4:1: log_target: must be 'auto', 'journal', 'stderr' or 'json' (got 'journald')",
        f"{config}:5:1: policy_dir: unknown key (expected one of: dry_run, policies_dir, state_file, "
        "cgroup_root, proc_root, rescan_interval_sec, sampling_interval_sec, node_actions_max_per_hour, "
        "log_target, write_retry_budget_sec, insecure_allow_untrusted_files)",
    ]


def test_file_values_are_not_coerced_from_strings(tmp_path: Path) -> None:
    config = write(tmp_path, 'sampling_interval_sec: "2"\ndry_run: "true"\n')

    assert error_lines(config) == [
        f"{config}:1:1: sampling_interval_sec: must be a number (got '2')",
        f"{config}:2:1: dry_run: must be true or false (got 'true')",
    ]


def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    config = write(tmp_path, "- dry_run\n")

    assert error_lines(config) == [f"{config}:1:1: (document): must be a mapping of settings (got a list)"]


def test_environment_errors_name_the_variable(tmp_path: Path) -> None:
    environ = {"REMEDIATOR_DRY_RUN": "maybe", "REMEDIATOR_NODE_ACTIONS_MAX_PER_HOUR": "-1"}

    assert error_lines(tmp_path / "absent.yaml", False, environ=environ) == [
        "env:REMEDIATOR_DRY_RUN: dry_run: must be true or false (got 'maybe')",
        "env:REMEDIATOR_NODE_ACTIONS_MAX_PER_HOUR: node_actions_max_per_hour: must be >= 0 (got '-1')",
    ]


def test_flag_errors_name_the_command_line(tmp_path: Path) -> None:
    overrides = {"log_target": "syslog", "colour": "blue"}

    assert error_lines(tmp_path / "absent.yaml", False, overrides=overrides) == [
        "command line: colour: unknown setting",
        "command line: log_target: must be 'auto', 'journal', 'stderr' or 'json' (got 'syslog')",
    ]


def test_every_source_is_checked_before_raising(tmp_path: Path) -> None:
    config = write(tmp_path, "rescan_interval_sec: 0\n")

    lines = error_lines(
        config, overrides={"sampling_interval_sec": 0}, environ={"REMEDIATOR_WRITE_RETRY_BUDGET_SEC": "99"}
    )

    assert lines == [
        f"{config}:1:1: rescan_interval_sec: must be >= 1 (got 0)",
        "command line: sampling_interval_sec: must be > 0 (got 0)",
        "env:REMEDIATOR_WRITE_RETRY_BUDGET_SEC: write_retry_budget_sec: must be <= 30 (got '99')",
    ]


@pytest.mark.parametrize(("text", "expected"), [("1", True), ("true", True), ("0", False), ("false", False)])
def test_environment_booleans_take_the_usual_spellings(tmp_path: Path, text: str, expected: bool) -> None:
    settings = load_settings(tmp_path / "absent.yaml", False, {}, {"REMEDIATOR_DRY_RUN": text})

    assert settings.dry_run is expected


def test_other_remediator_variables_are_not_settings(tmp_path: Path) -> None:
    environ = {"REMEDIATOR_CONFIG": "/etc/other.yaml", "REMEDIATOR_SOMETHING": "x"}

    assert load_settings(tmp_path / "absent.yaml", False, {}, environ) == Settings()


def test_flags_given_as_none_are_not_given(tmp_path: Path) -> None:
    config = write(tmp_path, "dry_run: true\n")

    assert load_settings(config, True, {"dry_run": None}, {}).dry_run is True


def test_paths_from_every_source_become_paths(tmp_path: Path) -> None:
    config = write(tmp_path, "policies_dir: /srv/policies\n")

    settings = load_settings(
        config, True, {"proc_root": "/host/proc"}, {"REMEDIATOR_STATE_FILE": "/tmp/s.json"}
    )

    assert settings.policies_dir == Path("/srv/policies")
    assert settings.proc_root == Path("/host/proc")
    assert settings.state_file == Path("/tmp/s.json")


def test_the_process_environment_is_read_only_when_no_environ_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIATOR_LOG_TARGET", "stderr")

    assert load_settings(tmp_path / "absent.yaml", False, {}, None).log_target == "stderr"
    assert load_settings(tmp_path / "absent.yaml", False, {}, {}).log_target == "auto"
    assert Settings().log_target == "auto"


def test_the_packaged_settings_file_is_valid_and_ships_dry_run() -> None:
    settings = load_settings(REPO / "packaging" / "etc" / "remediator.yaml", True, {}, {})

    assert settings.dry_run is True


def test_settings_error_reads_as_one_issue_per_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path / "nope.yaml", True, {"log_target": "x"}, {})

    assert str(caught.value).splitlines() == [str(issue) for issue in caught.value.issues]
