"""Daemon settings (pydantic-settings), from flags, environment, a YAML file and defaults.

Precedence, highest first:

1. command-line flags (``load_settings(overrides=...)``, as the CLI parsed them);
2. environment variables ``REMEDIATOR_<FIELD>`` in upper case
   (``REMEDIATOR_DRY_RUN=1``, ``REMEDIATOR_RESCAN_INTERVAL_SEC=30``); other
   ``REMEDIATOR_*`` variables are not settings and are ignored
   (``REMEDIATOR_CONFIG`` is the CLI's way to name the file);
3. the YAML file, ``/etc/remediator/remediator.yaml`` by default;
4. the defaults below.

The file is read with the same strict, located YAML as policies, so a bad
setting is reported as ``/etc/remediator/remediator.yaml:12:1:
rescan_interval_sec: must be <= 300 (got 500)``; unknown keys are errors. A
value from the environment is reported as ``env:REMEDIATOR_X: key: message``
and one from a flag as ``command line: key: message``. Every problem of every
source is collected before ``SettingsError`` is raised.

The file is optional at its default path (missing = defaults), but a file
named explicitly (``--config``, ``REMEDIATOR_CONFIG``) must exist.

``dry_run`` defaults to False here, but the *package* installs a
``remediator.yaml`` that sets ``dry_run: true``: a fresh install audits
("would ...") until the operator switches it off.

The file is believed only when nobody but root could have written it (owned
by root, not group/other-writable, nor any directory above it:
``remediator.trust``); otherwise it is an error naming the file and its mode.
The development override ``insecure_allow_untrusted_files`` waives that check
for the file only when it comes from the environment or a flag: a file cannot
vouch for itself. Set in a (trusted) file, it waives the check of the policies.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Type

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from remediator.errors import RemediatorError
from remediator.located.issues import DOCUMENT_KEY, FILE_KEY, PolicyIssue, format_issues, sorted_issues
from remediator.located.validation import describe_value, translate_validation_error, validation_issues
from remediator.located.yaml_doc import (
    LocatedDocument,
    decode_utf8,
    parse_located_yaml,
)
from remediator.trust import OVERRIDE_SETTING, check_file, path_text_problem, state_path_problem

DEFAULT_CONFIG_PATH = Path("/etc/remediator/remediator.yaml")
ENV_PREFIX = "REMEDIATOR_"
COMMAND_LINE = "command line"
MAX_SETTINGS_FILE_BYTES = 1 << 20

DEFAULTS = "default"  # the "file" of an issue about a value nobody set


def _checked_path(value: Any) -> Any:
    # Before pydantic turns it into a Path: Path("") is "." and would pass as a (relative) path.
    if isinstance(value, (str, os.PathLike)):
        problem = path_text_problem(os.fspath(value) if isinstance(value, os.PathLike) else value)
        if problem is not None:
            raise ValueError(problem)
    return value


def _checked_textfile(value: Any) -> Any:
    # The empty string switches the metrics off (``REMEDIATOR_METRICS_TEXTFILE=``).
    if value == "" or value is None:
        return None
    _checked_path(value)
    if isinstance(value, (str, os.PathLike)) and not os.fspath(value).endswith(".prom"):
        raise ValueError("must end in .prom: node_exporter's textfile collector reads only *.prom files")
    return value


# Paths come from YAML strings, environment strings and argparse Paths alike:
# the only fields where a string is converted rather than refused.
_PathSetting = Annotated[Path, BeforeValidator(_checked_path), Field(strict=False)]
_TextfileSetting = Annotated[
    Optional[Annotated[Path, Field(strict=False)]], BeforeValidator(_checked_textfile)
]

# The Debian node_exporter package's textfile directory (--collector.textfile.directory).
DEFAULT_METRICS_TEXTFILE = Path("/var/lib/prometheus/node-exporter/remediator.prom")


class Settings(BaseSettings):
    """The daemon's settings. Build them with ``load_settings``; ``Settings()`` is the defaults."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)

    dry_run: bool = Field(
        False,
        description="Decide and record, write nothing (records say 'would'). Default false; the packaged "
        "remediator.yaml sets true.",
    )
    policies_dir: _PathSetting = Field(
        Path("/etc/remediator/policies.d"), description="Policy files (*.yaml, *.yml), one policy each."
    )
    state_file: _PathSetting = Field(
        Path("/run/remediator/state.json"),
        description="Original values of everything changed, written before the first change.",
    )
    data_dir: Optional[_PathSetting] = Field(
        None,
        description="What must survive a reboot: the last valid policy set (last-valid-policies/) and the "
        "flight recorder's incidents (incidents/). Default: the state file's directory; the packaged "
        "remediator.yaml sets /var/lib/remediator (the state file's /run is emptied at boot).",
    )
    cgroup_root: _PathSetting = Field(Path("/sys/fs/cgroup"), description="The cgroup v2 mount.")
    proc_root: _PathSetting = Field(Path("/proc"), description="The proc mount.")
    rescan_interval_sec: float = Field(
        10.0,
        ge=1,
        le=300,
        description="How often the cgroup tree is rescanned: the longest a new cgroup waits to be watched "
        "(plus the arming of a burst of new ones). 1..300, default 10.",
    )
    sampling_interval_sec: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Sampling period when the kernel refuses PSI triggers. (0, 60], default 2.",
    )
    node_actions_max_per_hour: int = Field(
        4,
        ge=0,
        description="Node-wide actions (vfs_cache_pressure, drop_caches) of all policies per sliding hour; "
        "0 disables them. Default 4.",
    )
    log_target: Literal["auto", "journal", "stderr", "json"] = Field(
        "auto",
        description="auto: the journal under systemd, else stderr; json: one JSON object per line on stderr. "
        "Default auto.",
    )
    write_retry_budget_sec: float = Field(
        2.0,
        ge=0,
        le=30,
        description="Worst-case time spent retrying a write after a transient error (EAGAIN, EBUSY, EINTR). "
        "0..30, default 2.",
    )
    metrics_textfile: _TextfileSetting = Field(
        DEFAULT_METRICS_TEXTFILE,
        description="Prometheus metrics for node_exporter's textfile collector, replaced atomically; "
        'the directory must exist. "" disables. Default /var/lib/prometheus/node-exporter/remediator.prom '
        "(Debian's textfile directory).",
    )
    metrics_interval_sec: float = Field(
        15.0,
        ge=1,
        le=3600,
        description="The metrics file is written at most this often (and at stop). 1..3600, default 15.",
    )
    metrics_max_cgroup_series: int = Field(
        200,
        ge=0,
        le=100000,
        description="At most this many cgroups in remediator_cgroup_full_pressure_avg10 (the most "
        "pressured of those under action). 0..100000, default 200.",
    )
    pods_log_dir: _PathSetting = Field(
        Path("/var/log/pods"),
        description="The kubelet's pod log directory: pod namespace, name and container names for the "
        "records, status and target.kubernetes (its sibling containers/ names containers). Default "
        "/var/log/pods.",
    )
    flight_recorder_minutes: float = Field(
        10.0,
        ge=0,
        le=1440,
        description="The flight recorder keeps the last this many minutes of every target that had "
        "pressure in them, and writes them as a trace under <state dir>/incidents/ when a ladder is "
        "exhausted, a memory.high is backed off or oom_kill rises (dry-run too). 0 disables it. "
        "0..1440, default 10.",
    )
    incidents_max_files: int = Field(
        50,
        ge=1,
        le=100000,
        description="At most this many incident traces are kept; the oldest go first. 1..100000, default 50.",
    )
    incidents_max_bytes: int = Field(
        64 << 20,
        ge=1 << 20,
        description="At most this many bytes of incident traces are kept; the oldest go first (the newest "
        "stays). At least 1 MiB, default 64 MiB (67108864).",
    )
    insecure_allow_untrusted_files: bool = Field(
        False,
        description="Development only: believe settings and policy files that someone other than root "
        "could have written (owner, group/other write bits of the file and its directories). Default false.",
    )

    @property
    def persistent_dir(self) -> Path:
        """``data_dir``, or the state file's directory when it is not set."""
        return self.data_dir if self.data_dir is not None else self.state_file.parent

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: Type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> Tuple[PydanticBaseSettingsSource, ...]:
        # load_settings reads each source itself so that every error can be
        # located in the source it came from; the constructor only takes
        # what it is given and never reads the process environment behind
        # the caller's back.
        return (init_settings,)


class SettingsError(RemediatorError):
    """The settings are invalid; ``issues`` lists every problem, located."""

    def __init__(self, issues: List[PolicyIssue]) -> None:
        super().__init__(format_issues(issues))
        self.issues = issues


def env_var_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _plain_model(name: str, strict: bool) -> Type[BaseModel]:
    """The settings fields as a plain model.

    Each source is validated on its own with one of these, so an error is
    located in the source it came from. (BaseSettings' own validator ignores a
    per-call ``strict=``, and a per-call strict would override the paths'
    ``strict=False``: strictness lives in the model's config instead.)
    """
    return create_model(  # type: ignore[call-overload, no-any-return]
        name,
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False, strict=strict),
        **{field_name: (field.annotation, field) for field_name, field in Settings.model_fields.items()},
    )


# The file is strict like a policy ("10" is not a number, "yes" not a bool);
# environment variables and flags are strings or argparse values and are converted.
SettingsFileValues = _plain_model("SettingsFileValues", strict=True)
SettingsTextValues = _plain_model("SettingsTextValues", strict=False)


def _validate_layer(
    values: Mapping[str, Any], model: Type[BaseModel]
) -> Tuple[Dict[str, Any], Optional[ValidationError]]:
    """Validate one source on its own; return the typed values it sets."""
    try:
        validated = model.model_validate(dict(values))
    except ValidationError as problem:
        return {}, problem
    return {key: getattr(validated, key) for key in values}, None


def _file_issue(file: str, message: str) -> PolicyIssue:
    return PolicyIssue(file, 1, 1, FILE_KEY, message)


def read_settings_file(
    path: Path, explicit: bool, allow_untrusted: bool = False
) -> Tuple[Dict[str, Any], List[PolicyIssue]]:
    """The settings a YAML file sets, typed, or the located issues.

    Values in the file are strict: ``dry_run: "yes"`` or ``rescan_interval_sec:
    "10"`` are errors, as they would be in a policy. A file someone other than
    root could have written is refused unless ``allow_untrusted``.
    """
    values, issues, _document = _read_settings_document(path, explicit, allow_untrusted)
    return values, issues


_FileResult = Tuple[Dict[str, Any], List[PolicyIssue], Optional[LocatedDocument]]


def _read_settings_document(path: Path, explicit: bool, allow_untrusted: bool) -> _FileResult:
    """``read_settings_file``, and the document (for locating a later problem with a value)."""
    file = str(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        if explicit:
            return {}, [_file_issue(file, "settings file does not exist")], None
        return {}, [], None
    except OSError as error:
        return {}, [_file_issue(file, f"cannot read: {error.strerror or error}")], None
    if not stat.S_ISREG(status.st_mode):
        return {}, [_file_issue(file, "not a regular file")], None
    if status.st_size > MAX_SETTINGS_FILE_BYTES:
        return {}, [_file_issue(file, f"too large ({status.st_size} bytes)")], None
    untrusted = None if allow_untrusted else check_file(path)
    if untrusted is not None:
        return {}, [_file_issue(file, untrusted.message())], None
    try:
        data = path.read_bytes()
    except OSError as error:
        return {}, [_file_issue(file, f"cannot read: {error.strerror or error}")], None
    text, issues = decode_utf8(data, file)
    if text is None:
        return {}, issues, None
    document, issues = parse_located_yaml(text, file)
    if document.value is None:
        # No document at all (empty, only comments) means "all defaults".
        return {}, issues, document
    if not isinstance(document.value, dict):
        got = describe_value(document.value)
        return (
            {},
            [*issues, PolicyIssue(file, 1, 1, DOCUMENT_KEY, f"must be a mapping of settings (got {got})")],
            document,
        )
    values, problem = _validate_layer(document.value, SettingsFileValues)
    if problem is not None:
        issues = issues + validation_issues(document, problem, SettingsFileValues)
    return (values if not issues else {}), issues, document


def read_environment(environ: Mapping[str, str]) -> Tuple[Dict[str, Any], List[PolicyIssue]]:
    """The settings ``REMEDIATOR_<FIELD>`` variables set, typed, or their issues."""
    by_field = {
        field: environ[env_var_name(field)]
        for field in Settings.model_fields
        if env_var_name(field) in environ
    }
    values, problem = _validate_layer(by_field, SettingsTextValues)
    if problem is None:
        return values, []
    issues = [
        PolicyIssue(f"env:{env_var_name(str(path[0]))}", None, None, str(path[0]), message)
        for path, message in translate_validation_error(problem, SettingsTextValues, by_field)
        if path
    ]
    return {}, issues


def read_overrides(overrides: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[PolicyIssue]]:
    """Settings given on the command line (None = flag not given), typed, or their issues."""
    given = {key: value for key, value in overrides.items() if value is not None}
    issues = [
        PolicyIssue(COMMAND_LINE, None, None, key, "unknown setting")
        for key in given
        if key not in Settings.model_fields
    ]
    known = {key: value for key, value in given.items() if key in Settings.model_fields}
    values, problem = _validate_layer(known, SettingsTextValues)
    if problem is not None:
        issues += [
            PolicyIssue(COMMAND_LINE, None, None, str(path[0]) if path else DOCUMENT_KEY, message)
            for path, message in translate_validation_error(problem, SettingsTextValues, known)
        ]
    return ({} if issues else values), issues


def load_settings(
    config_path: Optional[Path] = None,
    explicit: bool = False,
    overrides: Optional[Mapping[str, Any]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Settings:
    """Settings from flags > environment > file > defaults; raises ``SettingsError``.

    ``config_path`` None means the default path. ``explicit`` says the
    operator named the file, so it must exist. ``environ`` defaults to the
    process environment.
    """
    path = config_path if config_path is not None else DEFAULT_CONFIG_PATH
    env_values, env_issues = read_environment(os.environ if environ is None else environ)
    flag_values, flag_issues = read_overrides(overrides or {})
    # Only the environment or a flag may excuse the file: a file cannot vouch for itself.
    file_excused = bool({**env_values, **flag_values}.get(OVERRIDE_SETTING, False))
    file_values, file_issues, document = _read_settings_document(path, explicit, file_excused)
    issues = file_issues + env_issues + flag_issues
    if issues:
        raise SettingsError(sorted_issues(issues))
    merged = {**file_values, **env_values, **flag_values}
    settings = Settings(**merged)
    # The state file is judged on the disk, once the winning value is known: check and run alike.
    problem = state_path_problem(settings.state_file)
    if problem is not None:
        where = _source_of("state_file", flag_values, env_values, file_values, document)
        raise SettingsError([where(problem)])
    return settings


def _source_of(
    field: str,
    flag_values: Mapping[str, Any],
    env_values: Mapping[str, Any],
    file_values: Mapping[str, Any],
    document: Optional[LocatedDocument],
) -> Callable[[str], PolicyIssue]:
    """How to locate an issue with the value of ``field`` that won (flag > env > file > default)."""
    if field in flag_values:
        return lambda message: PolicyIssue(COMMAND_LINE, None, None, field, message)
    if field in env_values:
        return lambda message: PolicyIssue(f"env:{env_var_name(field)}", None, None, field, message)
    if field in file_values and document is not None:
        located = document
        return lambda message: located.issue((field,), message)
    return lambda message: PolicyIssue(DEFAULTS, None, None, field, message)
