"""The ``remediator`` command line.

Exit codes: 0 success, 1 invalid configuration or policies (every error
listed) or a runtime failure, 2 usage errors. Global options name the kernel
roots so the same commands work on a fake tree, in a container that mounts
the host at /host, or on a bug report's copied tree.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from remediator import __version__

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path("/etc/remediator/remediator.yaml")


def _add_global(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # Subparsers repeat the global options so they may come before or after the
    # subcommand; SUPPRESS keeps a subcommand from resetting a value given earlier.
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help=f"settings file (default {DEFAULT_CONFIG}; env REMEDIATOR_CONFIG)",
    )
    parser.add_argument(
        "--policies",
        type=Path,
        default=default,
        metavar="DIR",
        help="policies directory (default /etc/remediator/policies.d)",
    )
    parser.add_argument(
        "--cgroup-root",
        type=Path,
        default=default,
        metavar="DIR",
        help="cgroup v2 root (default /sys/fs/cgroup)",
    )
    parser.add_argument(
        "--proc-root", type=Path, default=default, metavar="DIR", help="proc root (default /proc)"
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

    run = sub.add_parser("run", help="run the daemon (systemd Type=notify)")
    _add_global(run, suppress=True)
    run.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="decide and record, write nothing (REMEDIATOR_DRY_RUN=1 on every record)",
    )
    run.add_argument(
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
    env = os.environ.get("REMEDIATOR_CONFIG")
    if env:
        return Path(env), True
    return DEFAULT_CONFIG, False


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE

    from remediator.settings import Settings, SettingsError, load_settings

    config_path, explicit = _config_path(args)
    try:
        settings = load_settings(config_path, explicit, _overrides(args), os.environ)
    except SettingsError as exc:
        for issue in exc.issues:
            sys.stderr.write(f"{issue}\n")
        return EXIT_INVALID

    if args.command == "check":
        from remediator.commands.check import run_check

        return run_check(
            settings, config_path if explicit or config_path.exists() else None, sys.stdout, sys.stderr
        )
    if args.command == "status":
        from remediator.commands.status import run_status
        from remediator.kernel.roots import KernelRoots
        from remediator.policy.loader import load_policy_dir

        roots = KernelRoots(settings.cgroup_root, settings.proc_root)
        policy_set = load_policy_dir(
            settings.policies_dir, allow_untrusted=settings.insecure_allow_untrusted_files
        )
        if not args.cgroups and not args.all and policy_set.issues:
            for issue in policy_set.issues:
                sys.stderr.write(f"remediator: policy ignored: {issue}\n")
        return run_status(
            roots, policy_set.policies, args.cgroups, args.all, args.json, sys.stdout, sys.stderr
        )
    if args.command == "run":
        from remediator.daemon.service import run_service

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
