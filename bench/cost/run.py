"""The benchmark's one command (host side): boot the light VM once per series, collect the
guest reports, write the results JSON, the Markdown table and the plot.

    python -m bench.cost.run            # the full run: N = 10..2000, reaction at N = 1 and 1000
    python -m bench.cost.run --quick    # the CI smoke shape: N = 10, 5 events, short idle window
    python -m bench.cost.run --ns '' --reaction-ns '' --stop-ns 2000   # the stop series alone

One VM per series keeps every series on a fresh kernel (psimon threads, cgroup
memory and page cache of one series cannot leak into the next). VMs run one
after another: the machine has 2 cores and a VM uses both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bench.cost import report
from tests.vm import harness

Json = Dict[str, Any]

FULL_NS = (10, 100, 500, 1000, 2000)
FULL_REACTION_NS = (1, 1000)
FULL_EVENTS = 30
FULL_IDLE_SEC = 60.0
# The stop series (bench.cost.stop) at the scale series' N; the close cost by thread count only at
# the largest N, where it matters (each thread count arms and closes N triggers again).
FULL_STOP_NS = FULL_NS
FULL_CLOSE_THREADS = (1, 4, 16, 32, 64, 256)
QUICK_NS = (10,)
QUICK_REACTION_NS = (10,)
QUICK_EVENTS = 5
QUICK_IDLE_SEC = 10.0
PICKUP_COUNT = 100
FULL_CORE_ROUNDS = 20
QUICK_CORE_ROUNDS = 3
VM_SMP = 2
RESULTS_DIR = harness.REPO_ROOT / "bench" / "results"


def vm_mem_mib(n: int) -> int:
    # ~100 KiB of cgroup and process memory per cgroup plus its psimon thread, the daemon,
    # the baseline and the hog (measured: 2000 cgroups fit in well under 2 GiB).
    return 1024 if n <= 100 else 3072


@dataclass(frozen=True)
class Series:
    label: str
    guest_args: List[str]
    n: int
    timeout_sec: float
    module: str = "bench.cost.guest"


def plan(
    quick: bool,
    ns: Sequence[int],
    reaction_ns: Sequence[int],
    events: int,
    idle_sec: float,
    reaction_mode: str = "both",
    stop_ns: Sequence[int] = (),
    close_threads: Sequence[int] = (),
) -> List[Series]:
    series: List[Series] = []
    for n in ns:
        # Start-up and stop are slow under TCG at thousands of triggers: be generous.
        timeout = 600 + idle_sec * 2 + n * 1.0
        series.append(
            Series(
                f"scale-{n}",
                ["scale", "--n", str(n), "--idle-sec", str(idle_sec), "--pickup", str(PICKUP_COUNT)],
                n,
                timeout,
            )
        )
    for n in reaction_ns:
        # ~10 s per event and mode on a quiet host; several times that next to other VMs.
        modes = 2 if reaction_mode == "both" else 1
        timeout = 900 + events * 60 * modes + n * 0.5
        args = ["reaction", "--n", str(n), "--events", str(events), "--mode", reaction_mode]
        series.append(Series(f"reaction-{n}", args, n, timeout))
    largest_stop = max(stop_ns, default=None)
    for n in stop_ns:
        threads = list(close_threads) if n == largest_stop else []
        # Start-up, then per thread count N triggers armed and closed (about 50 s one after
        # another at N = 2000 under TCG).
        timeout = 900 + n * 0.5 + len(threads) * (120 + n * 0.05)
        args = ["--n", str(n), "--close-threads", ",".join(str(t) for t in threads)]
        series.append(Series(f"stop-{n}", args, n, timeout, module="bench.cost.stop"))
    return series


def run_series(vm: harness.LightVm, series: Series, work: Path) -> Json:
    out_dir = work / series.label
    out_dir.mkdir(parents=True, exist_ok=True)
    report_name = f"{series.label}.json"
    command = shlex.join(
        [
            sys.executable,
            "-m",
            series.module,
            *series.guest_args,
            "--out",
            f"{harness.GUEST_OUT_DIR}/{report_name}",
        ]
    )
    print(f"[bench] {series.label}: booting ({vm_mem_mib(series.n)} MiB, {VM_SMP} vCPUs)", flush=True)
    result = vm.boot(
        command, timeout_sec=series.timeout_sec, mem_mib=vm_mem_mib(series.n), smp=VM_SMP, out_dir=out_dir
    )
    print(f"[bench] {series.label}: exit {result.exit_code} after {result.elapsed:.0f} s", flush=True)
    if result.exit_code != 0:
        return {"label": series.label, "error": result.describe()}
    doc: Json = json.loads((out_dir / report_name).read_text())
    doc["label"] = series.label
    doc["vm"] = {"mem_mib": vm_mem_mib(series.n), "smp": VM_SMP, "elapsed_sec": result.elapsed}
    return doc


CORE_BENCHMARK = harness.REPO_ROOT / "tests" / "unit" / "test_bench_core.py"


def run_core_benchmark(rounds: int) -> Json:
    """The decision core's micro-benchmark on the host (pytest-benchmark): decisions per second."""
    with tempfile.TemporaryDirectory(prefix="remediator-bench-core-") as tmp:
        out = Path(tmp) / "core.json"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", str(CORE_BENCHMARK), f"--benchmark-json={out}"],
            cwd=harness.REPO_ROOT,
            env={**os.environ, "REMEDIATOR_BENCH_ROUNDS": str(rounds)},
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not out.exists():
            return {"error": (done.stdout + done.stderr)[-2000:]}
        doc = json.loads(out.read_text())
    return {
        "machine": doc.get("machine_info", {}).get("cpu", {}).get("brand_raw", ""),
        "rounds": rounds,
        "benchmarks": [
            {
                "name": b["name"],
                "cgroups": b.get("extra_info", {}).get("cgroups"),
                "decisions_per_sec": b.get("extra_info", {}).get("decisions_per_sec"),
                "mean_round_sec": b["stats"]["mean"],
            }
            for b in doc.get("benchmarks", [])
        ],
    }


def host_facts() -> Json:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    try:
        qemu = subprocess.run(
            ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError):
        qemu = "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(harness.REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return {
        "host_kernel": platform.release(),
        "host_cpu_model": cpu_model,
        "host_cpus": len(
            [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor")]
        ),
        "qemu": qemu,
        "emulation": "qemu TCG (-accel tcg,thread=multi -cpu max): full software emulation, no KVM",
        "commit": commit,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="remediator cost and reaction benchmark (issue 7)")
    parser.add_argument("--quick", action="store_true", help="the CI smoke shape: N = 10, 5 events")
    parser.add_argument("--ns", help="comma-separated N for the scale series")
    parser.add_argument("--reaction-ns", help="comma-separated N for the reaction series ('' for none)")
    parser.add_argument("--stop-ns", help="comma-separated N for the stop series ('' for none)")
    parser.add_argument(
        "--close-threads", help="comma-separated thread counts for the close cost at the largest stop N"
    )
    parser.add_argument("--events", type=int)
    parser.add_argument("--reaction-mode", choices=("both", "remediator", "baseline"), default="both")
    parser.add_argument("--idle-sec", type=float)
    parser.add_argument(
        "--skip-core", action="store_true", help="leave out the decision core's micro-benchmark"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--name", help="result file stem (default cost-<date>, cost-quick-<date> in quick mode)"
    )
    args = parser.parse_args(argv)
    if args.ns is not None:
        ns = [int(x) for x in args.ns.split(",") if x]
    else:
        ns = list(QUICK_NS if args.quick else FULL_NS)
    if args.reaction_ns is not None:
        reaction_ns = [int(x) for x in args.reaction_ns.split(",") if x]
    else:
        reaction_ns = list(QUICK_REACTION_NS if args.quick else FULL_REACTION_NS)
    if args.stop_ns is not None:
        stop_ns = [int(x) for x in args.stop_ns.split(",") if x]
    else:
        stop_ns = [] if args.quick else list(FULL_STOP_NS)
    if args.close_threads is not None:
        close_threads = [int(x) for x in args.close_threads.split(",") if x]
    else:
        close_threads = [] if args.quick else list(FULL_CLOSE_THREADS)
    events = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    idle_sec = args.idle_sec or (QUICK_IDLE_SEC if args.quick else FULL_IDLE_SEC)
    try:
        vm = harness.LightVm(harness.ensure_light())
    except harness.VmUnavailable as exc:
        print(f"[bench] VM unavailable: {exc.reason}", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    raw: List[Json] = []
    with tempfile.TemporaryDirectory(prefix="remediator-bench-") as work_name:
        for series in plan(
            args.quick, ns, reaction_ns, events, idle_sec, args.reaction_mode, stop_ns, close_threads
        ):
            raw.append(run_series(vm, series, Path(work_name)))
    facts = host_facts()
    facts.update(
        {
            "date": started.strftime("%Y-%m-%d"),
            "started_utc": started.isoformat(timespec="seconds"),
            "quick": bool(args.quick),
            "idle_sec": idle_sec,
            "events": events,
        }
    )
    core = (
        None if args.skip_core else run_core_benchmark(QUICK_CORE_ROUNDS if args.quick else FULL_CORE_ROUNDS)
    )
    results = report.summarize(raw, facts, core=core)
    stem = args.name or ("cost-quick-" if args.quick else "cost-") + facts["date"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    paths = report.write_all(results, args.out_dir, stem)
    for path in paths:
        print(f"[bench] wrote {path}")
    failed = [r["label"] for r in raw if "error" in r]
    if failed:
        print(f"[bench] series that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
