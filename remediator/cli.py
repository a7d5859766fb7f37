"""The ``remediator`` command line.

Exit codes: 0 success, 1 invalid configuration or policies (every error
listed) or a runtime failure, 2 usage errors. Global options name the kernel
roots so the same commands work on a fake tree, in a container that mounts
the host at /host, or on a bug report's copied tree.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, TextIO

from remediator import __version__
from remediator.text import escape_name

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path("/etc/remediator/remediator.yaml")
CONFIG_ENV = "REMEDIATOR_CONFIG"


def _path_argument(text: str) -> Path:
    """A directory named on the command line: relative to the caller's working directory.

    Settings refuse relative paths (a daemon's working directory is nobody's
    choice), so the command line resolves its own, as every tool does with a
    path argument (``--policies policies`` in a checkout). Empty is refused.
    """
    if text == "":
        raise argparse.ArgumentTypeError("must not be empty")
    try:
        return Path(text).absolute()
    except OSError as exc:  # the working directory was removed
        raise argparse.ArgumentTypeError(f"cannot be made absolute: {exc.strerror or exc}") from exc


def _add_global(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # Subparsers repeat the global options so they may come before or after the
    # subcommand; SUPPRESS keeps a subcommand from resetting a value given earlier.
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help=f"settings file (default {DEFAULT_CONFIG}; env {CONFIG_ENV})",
    )
    parser.add_argument(
        "--policies",
        type=_path_argument,
        default=default,
        metavar="DIR",
        help="policies directory (default /etc/remediator/policies.d)",
    )
    parser.add_argument(
        "--cgroup-root",
        type=_path_argument,
        default=default,
        metavar="DIR",
        help="cgroup v2 root (default /sys/fs/cgroup)",
    )
    parser.add_argument(
        "--proc-root", type=_path_argument, default=default, metavar="DIR", help="proc root (default /proc)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remediator",
        description="Remediate cgroup v2 memory pressure (PSI) instead of killing.",
    )
    parser.add_argument("--version", action="version", version=f"remediator {__version__}")
    _add_global(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="validate settings and policies; show what each policy selects now")
    _add_global(check, suppress=True)

    status = sub.add_parser("status", help="memory composition, pressure and a diagnosis per cgroup")
    _add_global(status, suppress=True)
    status.add_argument("cgroups", nargs="*", metavar="CGROUP", help="cgroups relative to the cgroup root")
    status.add_argument("--all", action="store_true", help="every cgroup with a memory controller")
    status.add_argument(
        "--json", action="store_true", help="machine-readable output (schema remediator.status/v1)"
    )

    record = sub.add_parser("record", help="sample cgroups and the node into a trace (remediator.trace/v1)")
    _add_global(record, suppress=True)
    record.add_argument("cgroups", nargs="*", metavar="CGROUP", help="cgroups relative to the cgroup root")
    record.add_argument("--all", action="store_true", help="every cgroup with a memory controller")
    record.add_argument("--duration", type=float, metavar="SEC", help="default: until SIGINT/SIGTERM")
    record.add_argument("--interval", type=float, default=1.0, metavar="SEC", help="default 1")
    record.add_argument(
        "--no-triggers", action="store_true",
        help="sample only: arm no PSI trigger (a replay works the events out from the samples)",
    )  # fmt: skip
    record.add_argument(
        "-o", "--output", type=Path, default=None, metavar="FILE",
        help="the trace to create (gzip if it ends in .gz; default remediator-<UTC time>.trace.gz)",
    )  # fmt: skip

    replay = sub.add_parser(
        "replay", help="what the daemon would have done with a trace (dry-run, simulated clock)"
    )
    _add_global(replay, suppress=True)
    replay.add_argument(
        "trace", type=Path, metavar="TRACE", help="a remediator.trace/v1 file (gzip or plain)"
    )
    replay.add_argument(
        "--json", action="store_true", help="machine-readable output (schema remediator.replay/v1)"
    )

    run = sub.add_parser("run", help="run the daemon (systemd Type=notify)")
    _add_global(run, suppress=True)
    # One or the other: with both, the last one used to win silently (a usage error now, exit 2).
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="decide and record, write nothing (REMEDIATOR_DRY_RUN=1 on every record)",
    )
    mode.add_argument(
        "--enforce",
        dest="dry_run",
        action="store_false",
        help="write (overrides dry_run: true in the settings file)",
    )
    run.add_argument(
        "--once", action="store_true", help="evaluate every target once, then exit (audits, cron)"
    )
    run.add_argument("--log-target", choices=("auto", "journal", "stderr", "json"), default=None)

    reload = sub.add_parser("reload", help="ask the running daemon to reload settings and policies (SIGHUP)")
    _add_global(reload, suppress=True)
    reload.add_argument(
        "--pid",
        type=int,
        default=None,
        help="the daemon's PID (ExecReload= passes $MAINPID); default: the daemon's PID file",
    )
    return parser


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for attr, key in (
        ("policies", "policies_dir"),
        ("cgroup_root", "cgroup_root"),
        ("proc_root", "proc_root"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            out[key] = value
    if getattr(args, "dry_run", None) is not None:
        out["dry_run"] = args.dry_run
    if getattr(args, "log_target", None) is not None:
        out["log_target"] = args.log_target
    return out


def _config_path(args: argparse.Namespace) -> tuple[Path, bool]:
    if getattr(args, "config", None) is not None:
        return args.config, True
    env = os.environ.get(CONFIG_ENV)
    if env is not None:
        return Path(env), True
    return DEFAULT_CONFIG, False


def _write_lines(stream: TextIO, lines: Iterable[object]) -> None:
    # Issues name files and repeat values: a newline or an escape in either must not reach the terminal raw.
    for line in lines:
        stream.write(escape_name(str(line)) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit code.

    Output to a pipe that closes early (``remediator check | head -1``) ends
    quietly with exit 1, as Python's documentation recommends (signal module,
    "Note on SIGPIPE"), instead of a BrokenPipeError traceback.
    """
    try:
        code = _main(argv)
        # Flushed here, not at exit: a closed pipe must be seen while it can still be handled.
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_INVALID
    return code


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush has nowhere to fail.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (tests capture it): nothing will be flushed at exit


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE

    from remediator.settings import Settings, SettingsError, load_settings
    from remediator.trust import path_text_problem

    config_path, explicit = _config_path(args)
    env_config = os.environ.get(CONFIG_ENV)
    # The settings' rule for paths applies to the one that names the settings file too.
    problem = path_text_problem(env_config) if args.config is None and env_config is not None else None
    if problem is not None:
        _write_lines(sys.stderr, [f"env:{CONFIG_ENV}: {problem}"])
        return EXIT_INVALID
    try:
        settings = load_settings(config_path, explicit, _overrides(args), os.environ)
    except SettingsError as exc:
        _write_lines(sys.stderr, exc.issues)
        return EXIT_INVALID

    if args.command == "check":
        from remediator.commands.check import run_check

        return run_check(
            settings, config_path if explicit or config_path.exists() else None, sys.stdout, sys.stderr
        )
    if args.command == "status":
        from remediator.commands.status import run_status
        from remediator.identity import IdentityResolver
        from remediator.kernel.roots import KernelRoots
        from remediator.policy.loader import load_policy_dir

        roots = KernelRoots(settings.cgroup_root, settings.proc_root)
        policy_set = load_policy_dir(
            settings.policies_dir, allow_untrusted=settings.insecure_allow_untrusted_files
        )
        if not args.cgroups and not args.all and policy_set.issues:
            _write_lines(sys.stderr, (f"remediator: policy ignored: {issue}" for issue in policy_set.issues))
        # Pod, namespace and container names from the kubelet's log directories, as the daemon names them.
        identify = IdentityResolver(pods_log_dir=settings.pods_log_dir).identify
        return run_status(
            roots, policy_set.policies, args.cgroups, args.all, args.json, sys.stdout, sys.stderr, identify
        )
    if args.command == "record":
        from remediator.clock import SystemClock
        from remediator.commands.record import RecordRequest, run_record
        from remediator.kernel.roots import KernelRoots
        from remediator.policy.loader import load_policy_dir

        policy_set = load_policy_dir(
            settings.policies_dir, allow_untrusted=settings.insecure_allow_untrusted_files
        )
        if not args.cgroups and not args.all:
            for issue in policy_set.issues:
                sys.stderr.write(f"remediator: policy ignored: {issue}\n")
        request = RecordRequest(
            roots=KernelRoots(settings.cgroup_root, settings.proc_root),
            policies=policy_set.enabled,
            policies_dir=settings.policies_dir,
            cgroups=args.cgroups,
            all_cgroups=args.all,
            output=args.output,
            interval_sec=args.interval,
            duration_sec=args.duration,
            triggers=not args.no_triggers,
        )
        return run_record(request, SystemClock(), sys.stdout, sys.stderr)
    if args.command == "replay":
        from remediator.commands.replay import run_replay

        return run_replay(settings, args.trace, args.json, sys.stdout, sys.stderr)
    if args.command == "run":
        from remediator.daemon.run import run_service

        overrides = _overrides(args)

        def reload_settings() -> Settings:
            # SIGHUP re-reads the file and the environment; flags keep their precedence.
            return load_settings(config_path, explicit, overrides, os.environ)

        return run_service(settings, once=args.once, reload_settings=reload_settings)
    if args.command == "reload":
        from remediator.commands.reload import run_reload

        return run_reload(settings, args.pid, sys.stderr)
    parser.print_usage(sys.stderr)
    return EXIT_USAGE
