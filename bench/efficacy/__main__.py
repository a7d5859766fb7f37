"""python -m bench.efficacy: the efficacy benchmark (issue 6), in the test VM or --native.

    python -m bench.efficacy                 # full set in the VM: 3 scenarios x 4 series x 3 runs
    python -m bench.efficacy --matrix        # issue 13: 10 scenarios x up to 7 series (with Senpai)
    python -m bench.efficacy --quick         # CI: one run per series
    python -m bench.efficacy --native        # on this host (root, cgroup v2 memory controller)
    python -m bench.efficacy --replot bench/results/efficacy-results.json

Writes <out>/efficacy-results.json, <out>/efficacy-results.md and one
<out>/efficacy-<scenario>.png per scenario. Exit status: 0 when every run
finished (missed targets are reported, not failures: they are findings), 1
when a run failed, 2 when the benchmark cannot run here (the reason is printed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from bench.efficacy import environment, report
from bench.efficacy.metrics import scanned_mib_by
from bench.efficacy.peers import DEFAULT_SENPAI_DIR, senpai_status
from bench.efficacy.scenarios import (
    ALL_SERIES,
    DEFAULT_SCENARIOS,
    MATRIX_SCENARIOS,
    MATRIX_SERIES,
    SCENARIOS,
    SERIES,
    WorkloadKind,
    scenario_named,
    series_for,
    series_order,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICIES_DIR = REPO_ROOT / "policies"
FULL_OUT_DIR = REPO_ROOT / "bench" / "results"
QUICK_OUT_DIR = REPO_ROOT / "build" / "efficacy-quick"
# Each VM's plan, console log and raw results (kept for debugging; /build is not committed).
VM_WORK_DIR = REPO_ROOT / "build" / "efficacy-work"
RESULTS_STEM = "efficacy-results"
FULL_REPEATS = 3
DEFAULT_DURATION_SEC = 30.0
# The matrix (10 scenarios, up to 7 series) in under an hour on a 2-core host: 2 runs of 20 s
# per series (see README: the time each run costs, measured).
MATRIX_REPEATS = 2
MATRIX_DURATION_SEC = 20.0
# Of the matrix's series, these run in every repeat (the ratios and "no harm" compare them);
# the static grid, Senpai and dry-run run once per scenario. Measured on the 2-core host: a run
# costs its 20 s plus about 8 s (workload start-up, set-up) or about 30 s with the daemon's
# start-up under TCG, and a VM boot about 10 s: all 7 series of 7 scenarios and 5 of 3 is
# about 39 min, a second run of none and remediator about 15 min more.
MATRIX_REPEATED_SERIES = ("none", "remediator")
# Record fields kept in the results file (the daemon's evidence fields are many and repetitive).
KEPT_RECORD_FIELDS = (
    "_ARRIVED",
    "_DECIDED",
    "MESSAGE_ID",
    "MESSAGE",
    "REMEDIATOR_POLICY",
    "REMEDIATOR_CGROUP",
    "REMEDIATOR_ACTION",
    "REMEDIATOR_RESULT",
    "REMEDIATOR_BEFORE",
    "REMEDIATOR_AFTER",
    "REMEDIATOR_DRY_RUN",
    "REMEDIATOR_RUNG",
    "REMEDIATOR_FOLLOW_UP",
    "REMEDIATOR_HELPED_IN_PART",
    "REMEDIATOR_FULL_AVG10",
    "REMEDIATOR_STALL_DELTA_US",
    "REMEDIATOR_RECLAIM_ASKED_BYTES",
    "REMEDIATOR_RECLAIM_COMPLETED_BYTES",
)


def source_commit() -> Optional[str]:
    """The repository's commit, so results say which code and policies produced them."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() or None


def shipped_policies(directory: Path = POLICIES_DIR) -> Dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(directory.glob("*.yaml"))}


def plan_runs(
    scenarios: Sequence[str],
    repeats: int,
    duration_sec: float,
    series: Sequence[str] = SERIES,
    repeated: Optional[Sequence[str]] = None,
) -> List[List[Dict[str, Any]]]:
    """One list of runs per VM: one repeat of one scenario, its series, rotated per repeat.

    ``repeated``: the series run in every repeat; the others run in the first only (the
    matrix's way to fit an hour: see MATRIX_REPEATED_SERIES)."""
    plan = []
    for repeat in range(repeats):
        for scenario in scenarios:
            names = series_for(scenario_named(scenario), tuple(series))
            if repeat > 0 and repeated is not None:
                names = tuple(name for name in names if name in repeated)
            plan.append(
                [
                    {"scenario": scenario, "series": name, "duration_sec": duration_sec, "repeat": repeat}
                    for name in series_order(repeat, names)
                ]
            )
    return plan


def slim_run(run: Mapping[str, Any]) -> Dict[str, Any]:
    """A run as committed: the workload's progress is reduced to MiB per second, records to key fields."""
    out = {key: value for key, value in run.items() if key not in ("progress", "records")}
    if "records" in run:
        out["records"] = [
            {key: record[key] for key in KEPT_RECORD_FIELDS if key in record} for record in run["records"]
        ]
    progress = run.get("progress", [])
    last_second = int(max((event["arrived"] for event in progress), default=0.0))
    out["scanned_mib_at_second"] = [
        [second, scanned_mib_by(progress, second + 1.0)] for second in range(last_second + 1)
    ]
    return out


def run_vm(arguments: argparse.Namespace, work_dir: Path) -> Dict[str, Any]:
    from bench.efficacy import vm as vm_mode
    from tests.vm import harness

    try:
        light = harness.LightVm(harness.ensure_light())
        vm_mode.ensure_data_image()
    except harness.VmUnavailable as exc:
        raise SystemExit(_refuse(f"the VM is unavailable: {exc.reason}")) from exc
    policies = shipped_policies(arguments.policies)
    host_env = environment.collect("vm-host", with_qemu=True)
    runs: List[Dict[str, Any]] = []
    vms: List[Dict[str, Any]] = []
    guest_env: Dict[str, Any] = {}
    plan = plan_runs(
        arguments.scenarios, arguments.repeats, arguments.duration, arguments.series, arguments.repeated
    )
    kinds = {scenario_named(name).kind for name in arguments.scenarios}
    if kinds & {WorkloadKind.FIO_READ, WorkloadKind.FIO_WRITE, WorkloadKind.PGBENCH}:
        vm_mode.ensure_tools()
    pg_image = vm_mode.ensure_pg_image() if WorkloadKind.PGBENCH in kinds else None
    for index, vm_runs in enumerate(plan):
        label = f"{vm_runs[0]['scenario']} repeat {vm_runs[0]['repeat'] + 1}/{arguments.repeats}"
        print(f"[efficacy] VM {index + 1}/{len(plan)}: {label}", flush=True)
        load_before = environment.collect("vm-host")["load_average"]
        scenario = scenario_named(vm_runs[0]["scenario"])
        guest_report = vm_mode.run_in_vm(
            light,
            vm_runs,
            policies,
            work_dir / f"vm-{index:02d}",
            scratch_drive=scenario.dirty_mib > 0 or scenario.kind is WorkloadKind.FIO_WRITE,
            pg_image=pg_image if scenario.kind is WorkloadKind.PGBENCH else None,
            senpai=arguments.senpai_file,
        )
        guest_env = guest_env or guest_report.get("environment_guest", {})
        vm_info = {
            "label": label,
            "host_load_before": load_before,
            "host_load_after": environment.collect("vm-host")["load_average"],
            **guest_report["vm"],
        }
        vms.append(vm_info)
        for run in guest_report["runs"]:
            _print_run(run)
            runs.append(slim_run(run))
        if guest_report["vm"].get("exit_code") != 0:
            print(guest_report["vm"].get("describe", ""), file=sys.stderr)
    host_env["load_average_end"] = environment.collect("vm-host")["load_average"]
    return {
        "mode": "vm",
        "environment": {"vm-host": host_env, "vm-guest": guest_env},
        "vms": vms,
        "runs": runs,
        "policies": policies,
    }


def run_native(arguments: argparse.Namespace) -> Dict[str, Any]:
    from bench.efficacy import native
    from bench.efficacy.runner import run_one

    env = environment.collect("native")
    runs: List[Dict[str, Any]] = []
    try:
        policies = shipped_policies(arguments.policies)
        with native.interruptible(), native.native_setup(policies, arguments.data_dir) as native_run:
            plan = plan_runs(
                arguments.scenarios,
                arguments.repeats,
                arguments.duration,
                arguments.series,
                arguments.repeated,
            )
            setup = replace(native_run, senpai=arguments.senpai_file)
            for vm_runs in plan:
                for item in vm_runs:
                    print(
                        f"[efficacy] {item['scenario']} / {item['series']} ({item['duration_sec']:g} s)",
                        flush=True,
                    )
                    run = run_one(
                        scenario_named(item["scenario"]), item["series"], item["duration_sec"], setup
                    )
                    run["repeat"] = item["repeat"]
                    _print_run(run)
                    runs.append(slim_run(run))
            policies = dict(setup.policies)
    except native.NativeRefused as exc:
        raise SystemExit(_refuse(str(exc))) from exc
    except KeyboardInterrupt:
        print(
            "[efficacy] interrupted: the benchmark's cgroup, tmpfs and daemon were cleaned up",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    env["load_average_end"] = environment.collect("native")["load_average"]
    return {"mode": "native", "environment": {"native": env}, "runs": runs, "policies": policies}


def _refuse(reason: str) -> int:
    print(f"efficacy benchmark: cannot run here: {reason}", file=sys.stderr)
    return 2


def _print_run(run: Mapping[str, Any]) -> None:
    if "error" in run:
        print(f"[efficacy]   {run.get('scenario')} / {run.get('series')} FAILED:\n{run['error']}", flush=True)
        return
    metrics = run["metrics"]
    print(
        f"[efficacy]   {run['scenario']} / {run['series']}: full stall {metrics['full_stall_pct']} %, "
        f"{metrics['throughput_mib_s']} MiB/s, OOM kills {metrics['oom_kills']}",
        flush=True,
    )


def finish(results: Dict[str, Any], out_dir: Path, notes: Optional[Path]) -> int:
    """Summaries, targets, pictures, JSON and Markdown; the exit status."""
    runs = results["runs"]
    scenarios = results["scenarios"]
    results["summary"] = report.summarize_runs(runs, scenarios)
    results["targets"] = [t.as_json() for t in report.all_targets(runs, scenarios, results["summary"])]
    if notes is not None:
        results["notes"] = notes.read_text().splitlines()
    out_dir.mkdir(parents=True, exist_ok=True)
    results["pictures"] = {}
    try:
        from bench.efficacy.plot import plot_scenario

        for scenario in scenarios:
            picture = plot_scenario(results, scenario, out_dir / f"efficacy-{scenario}.png")
            if picture is not None:
                results["pictures"][scenario] = picture.name
    except ImportError:
        print("[efficacy] matplotlib is not installed (pip install '.[bench]'): no pictures", file=sys.stderr)
    (out_dir / f"{RESULTS_STEM}.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (out_dir / f"{RESULTS_STEM}.md").write_text(report.markdown(results) + "\n")
    print(f"[efficacy] results: {out_dir / RESULTS_STEM}.md (and .json, pictures)")
    for target in results["targets"]:
        mark = {True: "met", False: "MISSED", None: "not judged"}[target["met"]]
        print(f"[efficacy] {target['scenario']}: {target['target']}: {mark} - {target['detail']}")
    failed = [run for run in runs if "error" in run]
    return 1 if failed else 0


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.efficacy",
        description=(__doc__ or "").split("\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--quick", action="store_true", help="one run per series (what CI runs)")
    parser.add_argument(
        "--matrix",
        action="store_true",
        help=f"issue 13's matrix: every scenario and series ({MATRIX_REPEATS} runs of "
        f"{MATRIX_DURATION_SEC:g} s; quick: one)",
    )
    parser.add_argument(
        "--senpai",
        type=Path,
        default=DEFAULT_SENPAI_DIR,
        help=f"folder with Senpai's senpai.py, sha256-checked (default {DEFAULT_SENPAI_DIR})",
    )
    parser.add_argument("--native", action="store_true", help="run on this host instead of the VM (root)")
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"runs per series (default {FULL_REPEATS}, quick 1)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per run (default 30, --matrix 20)"
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=None,
        choices=sorted(SCENARIOS),
        metavar="SCENARIO",
        help=f"default: {' '.join(DEFAULT_SCENARIOS)}; also: "
        + " ".join(name for name in SCENARIOS if name not in DEFAULT_SCENARIOS),
    )
    parser.add_argument(
        "--series",
        nargs="+",
        default=None,
        choices=ALL_SERIES,
        metavar="SERIES",
        help=f"default: {' '.join(SERIES)}; also: {' '.join(s for s in ALL_SERIES if s not in SERIES)}",
    )
    parser.add_argument(
        "--policies",
        type=Path,
        default=POLICIES_DIR,
        help="the daemon's policies for the remediator series (default: the shipped policies/)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default bench/results, quick build/efficacy-quick)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="--native: where the scan loop's files go"
    )
    parser.add_argument(
        "--notes", type=Path, default=None, help="a text file appended to the results as notes"
    )
    parser.add_argument(
        "--replot", type=Path, default=None, help="re-summarize and re-draw a results JSON file"
    )
    arguments = parser.parse_args(argv)
    if arguments.repeats is None:
        arguments.repeats = 1 if arguments.quick else (MATRIX_REPEATS if arguments.matrix else FULL_REPEATS)
    if arguments.duration is None:
        arguments.duration = MATRIX_DURATION_SEC if arguments.matrix else DEFAULT_DURATION_SEC
    if arguments.scenarios is None:
        arguments.scenarios = list(MATRIX_SCENARIOS if arguments.matrix else DEFAULT_SCENARIOS)
    if arguments.series is None:
        arguments.series = list(MATRIX_SERIES if arguments.matrix else SERIES)
    arguments.repeated = MATRIX_REPEATED_SERIES if arguments.matrix else None
    arguments.senpai_file = None
    if "senpai" in arguments.series:
        status = senpai_status(arguments.senpai)
        arguments.senpai_status = status.as_json()
        print(f"[efficacy] senpai: {status.reason}", flush=True)
        if status.usable:
            arguments.senpai_file = status.path
        else:
            arguments.series = [name for name in arguments.series if name != "senpai"]
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = parse_args(argv)
    if arguments.replot is not None:
        results = json.loads(arguments.replot.read_text())
        return finish(results, arguments.out or arguments.replot.parent, arguments.notes)
    out_dir: Path = arguments.out or (QUICK_OUT_DIR if arguments.quick else FULL_OUT_DIR)
    started = time.monotonic()
    header = {
        "schema": report.SCHEMA,
        "quick": arguments.quick,
        "repeats": arguments.repeats,
        "duration_sec": arguments.duration,
        "scenarios": list(arguments.scenarios),
        "policies_dir": str(arguments.policies),
        "commit": source_commit(),
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "memory_max_mib": scenario_named(arguments.scenarios[0]).memory_max_mib,
        "series": list(arguments.series),
        "repeated_series": None if arguments.repeated is None else list(arguments.repeated),
        "senpai": getattr(arguments, "senpai_status", None),
    }
    if arguments.native:
        from bench.efficacy.native import DEFAULT_DATA_DIR

        arguments.data_dir = arguments.data_dir or DEFAULT_DATA_DIR
        body = run_native(arguments)
    else:
        stamp = header["started_utc"].replace(":", "")
        body = run_vm(arguments, VM_WORK_DIR / stamp)
    results = {**header, **body}
    results["finished_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    results["elapsed_sec"] = round(time.monotonic() - started, 1)
    return finish(results, out_dir, arguments.notes)


if __name__ == "__main__":
    sys.exit(main())
