"""Settings: precedence (flag > env > file > default) and located errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from remediator import settings as settings_module
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
        "data_dir, cgroup_root, proc_root, rescan_interval_sec, sampling_interval_sec, "
        "node_actions_max_per_hour, log_target, write_retry_budget_sec, metrics_textfile, "
        "metrics_interval_sec, metrics_max_cgroup_series, pods_log_dir, flight_recorder_minutes, "
        "incidents_max_files, incidents_max_bytes, insecure_allow_untrusted_files)",
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

    state = tmp_path / "s.json"
    settings = load_settings(config, True, {"proc_root": "/host/proc"}, {"REMEDIATOR_STATE_FILE": str(state)})

    assert settings.policies_dir == Path("/srv/policies")
    assert settings.proc_root == Path("/host/proc")
    assert settings.state_file == state


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


# ---- path-valued settings: one rule for every path and every source (issue 12, item 14) ---------------

PATH_FIELDS = ("policies_dir", "state_file", "cgroup_root", "proc_root")


@pytest.mark.parametrize("field", PATH_FIELDS)
@pytest.mark.parametrize(
    ("yaml_value", "message"),
    [
        ('"/srv/a\\0b"', "must not contain a NUL byte"),
        ('""', "must not be empty"),
        ("relative/dir", "must be an absolute path (got 'relative/dir')"),
    ],
)
def test_a_path_setting_that_no_system_call_takes_is_refused_located_in_the_file(
    tmp_path: Path, field: str, yaml_value: str, message: str
) -> None:
    config = write(tmp_path, f"# paths\n{field}: {yaml_value}\n")

    [line] = error_lines(config)

    assert line.startswith(f"{config}:2:1: {field}: {message}")


@pytest.mark.parametrize("field", PATH_FIELDS)
@pytest.mark.parametrize(
    ("text", "message"), [("", "must not be empty"), ("x.json", "must be an absolute path")]
)
def test_an_empty_or_relative_path_from_the_environment_is_refused(
    tmp_path: Path, field: str, text: str, message: str
) -> None:
    variable = f"REMEDIATOR_{field.upper()}"

    [line] = error_lines(tmp_path / "absent.yaml", False, environ={variable: text})

    assert line.startswith(f"env:{variable}: {field}: {message}")


def test_a_relative_path_given_to_load_settings_as_a_flag_is_refused(tmp_path: Path) -> None:
    # The CLI makes its path arguments absolute first (test_cli_paths); a caller that does not is refused.
    [line] = error_lines(tmp_path / "absent.yaml", False, overrides={"policies_dir": Path("policies")})

    assert line.startswith("command line: policies_dir: must be an absolute path (got 'policies')")


# ---- the state file on the disk (issue 12, item 1, the settings side) ----------------------------------


def private_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return directory


def test_an_absent_or_regular_state_file_in_a_private_directory_is_accepted(tmp_path: Path) -> None:
    directory = private_dir(tmp_path)
    absent = directory / "state.json"
    assert (
        load_settings(tmp_path / "a.yaml", False, {}, {"REMEDIATOR_STATE_FILE": str(absent)}).state_file
        == absent
    )
    absent.write_text('{"schema_version": 1, "entries": []}\n')
    assert (
        load_settings(tmp_path / "a.yaml", False, {}, {"REMEDIATOR_STATE_FILE": str(absent)}).state_file
        == absent
    )
    # A directory not created yet is made 0700 by the daemon: judged by the ones above it.
    later = directory / "not-yet" / "state.json"
    assert (
        load_settings(tmp_path / "a.yaml", False, {}, {"REMEDIATOR_STATE_FILE": str(later)}).state_file
        == later
    )


def test_a_directory_named_as_state_file_is_refused_where_it_was_set(tmp_path: Path) -> None:
    directory = private_dir(tmp_path)
    config = write(tmp_path, f"dry_run: true\nstate_file: {directory}\n")

    assert error_lines(config) == [
        f"{config}:2:1: state_file: {directory} is a directory; the state file must be a regular file "
        "(or absent), which the daemon replaces and, when invalid, moves aside"
    ]


def test_a_regular_file_that_is_not_remediator_state_is_refused_where_it_was_set(tmp_path: Path) -> None:
    passwd = private_dir(tmp_path) / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    config = write(tmp_path, f"dry_run: true\nstate_file: {passwd}\n")

    assert error_lines(config) == [
        f"{config}:2:1: state_file: {passwd} is not a remediator state file; the daemon would replace "
        "it with one (name a path of its own, e.g. /var/lib/remediator/state.json)"
    ]


@pytest.mark.parametrize("kind", ["fifo", "symlink", "socket"])
def test_a_state_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = private_dir(tmp_path) / "state.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        path.symlink_to(tmp_path / "passwd")
    else:
        listener = socket.socket(socket.AF_UNIX)
        try:
            listener.bind(str(path))
        except OSError:
            pytest.skip("the path is too long for a unix socket here")
        listener.close()
    names = {"fifo": "a FIFO", "symlink": "a symlink", "socket": "a socket"}

    [line] = error_lines(tmp_path / "a.yaml", False, environ={"REMEDIATOR_STATE_FILE": str(path)})

    assert line.startswith(f"env:REMEDIATOR_STATE_FILE: state_file: {path} is {names[kind]};")


@pytest.mark.parametrize(
    ("mode", "writers"), [(0o770, "group"), (0o707, "others"), (0o1777, "group and others")]
)
def test_a_state_file_in_a_directory_others_can_write_is_refused(
    tmp_path: Path, mode: int, writers: str
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)

    [line] = error_lines(tmp_path / "a.yaml", False, overrides={"state_file": directory / "state.json"})

    assert line == (
        f"command line: state_file: directory {directory} (mode {mode:04o}, owner uid {os.geteuid()}) is "
        f"writable by {writers}; the state file's directory must be one only root can write (it holds the "
        "originals every restore needs), such as /run/remediator"
    )


def test_a_state_file_below_a_regular_file_is_refused(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")

    [line] = error_lines(
        tmp_path / "a.yaml", False, environ={"REMEDIATOR_STATE_FILE": f"{passwd}/state.json"}
    )

    assert line == (
        f"env:REMEDIATOR_STATE_FILE: state_file: {passwd}/state.json: a directory above it is not a directory"
    )


def test_a_bad_default_state_path_is_said_to_be_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever this machine's /run looks like: the point is where the issue is located.
    monkeypatch.setattr(settings_module, "state_path_problem", lambda path: f"{path} is unusable here")

    assert error_lines(tmp_path / "a.yaml", False) == [
        "default: state_file: /run/remediator/state.json is unusable here"
    ]


# ------------------------------------------------------------------ metrics and identity keys


def test_metrics_and_identity_defaults() -> None:
    defaults = load_settings(None, False, {}, environ={})
    assert defaults.metrics_textfile == Path("/var/lib/prometheus/node-exporter/remediator.prom")
    assert defaults.metrics_interval_sec == 15.0
    assert defaults.metrics_max_cgroup_series == 200
    assert defaults.pods_log_dir == Path("/var/log/pods")


def test_an_empty_metrics_textfile_disables_the_metrics_from_every_source(tmp_path: Path) -> None:
    assert load_settings(None, False, {}, {"REMEDIATOR_METRICS_TEXTFILE": ""}).metrics_textfile is None
    config = write(tmp_path, 'metrics_textfile: ""\n')
    assert load_settings(config, True, {}, environ={}).metrics_textfile is None


def test_metrics_textfile_must_be_an_absolute_prom_file(tmp_path: Path) -> None:
    config = write(tmp_path, "metrics_textfile: /var/lib/x/remediator.txt\nmetrics_interval_sec: 0\n")
    assert error_lines(config) == [
        f"{config}:1:1: metrics_textfile: must end in .prom: node_exporter's textfile collector reads "
        "only *.prom files",
        f"{config}:2:1: metrics_interval_sec: must be >= 1 (got 0)",
    ]
    with pytest.raises(SettingsError, match="env:REMEDIATOR_METRICS_TEXTFILE: metrics_textfile: must be an"):
        load_settings(None, False, {}, {"REMEDIATOR_METRICS_TEXTFILE": "x.prom"})
