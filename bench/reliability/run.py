"""The reliability campaign (issue 8): bad input, faults, churn; figures to bench/results.

    python -m bench.reliability.run            # the whole campaign (about an hour here)
    python -m bench.reliability.run --quick    # a smoke of every part (minutes)

Parts, each recorded even when it cannot run here (with the reason):

1. **Fuzzing**: every target of tests/fuzz/targets.py with Hypothesis
   (``--budget`` inputs each, default 10,000) and with atheris, coverage-guided
   (``--atheris-runs`` each, default 50,000; installed into a cache outside the
   repository). Counted: inputs, findings (crash, unlocated rejection, broken
   invariant), hangs, the slowest input.
2. **Churn on the fake tree**: ``tests.unit.test_churn.churn`` with 10,000
   creations and 500 live, triggers and sampling: fds, Python heap growth,
   leftovers, busy steps.
3. **Faults and churn on a real kernel**: tests/vm/test_vm_faults.py, run by
   pytest with the campaign's sizes (50 SIGKILL runs, a 512 MiB reclaim,
   10,000 cgroups with 500 live); each test's verdict is the fault's
   "survived", and the scenarios' reports give the figures.
4. **Hostile trees and files** (issue 12, ``bench/reliability/hostile.py``):
   glob matching against 1,000-deep names and ``check``/``run`` on such a
   tree, cgroup names that are terminal escapes through ``status``, ``check``
   and the stderr records, state files over and just under the loader's
   limit, a FIFO and a hard link in the tree; each case passes or fails.

Writes ``bench/results/reliability-<date>.json`` and ``.md`` (``--quick``:
``build/reliability-quick/``); exits 1 when
anything was found, a fault not survived, or a bound exceeded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

from bench.reliability.hostile import hostile_trees

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
WORK = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "remediator" / "reliability"

Json = Dict[str, Any]


def log(message: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- 1. fuzzing ----------------------------------------------------------------------------


def fuzz_hypothesis(budget: int) -> Json:
    from tests.fuzz.hypothesis_campaign import fuzz_target
    from tests.fuzz.targets import TARGETS

    runs = []
    for name in TARGETS:
        run = fuzz_target(name, budget)
        log(f"hypothesis {name}: {run.inputs} inputs, {len(run.findings)} findings, {run.hangs} hangs")
        runs.append(run.summary())
    return {"engine": "hypothesis", "budget_per_target": budget, "targets": runs}


def fuzz_atheris(runs: int, work: Path) -> Json:
    out = work / "atheris.json"
    argv = [sys.executable, "-m", "tests.fuzz.atheris_campaign", "--runs", str(runs), "--work",
            str(work / "atheris"), "--out", str(out)]  # fmt: skip
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    sys.stdout.write(completed.stdout)
    if not out.exists():
        return {"engine": "atheris", "unavailable": completed.stderr.strip()[-500:] or "no summary written"}
    summary = json.loads(out.read_text())
    if isinstance(summary, dict) and summary.get("unavailable"):
        return {"engine": "atheris", "unavailable": completed.stderr.strip()[-500:]}
    return {"engine": "atheris", "runs_per_target": runs, "targets": summary}


# ---- 2. churn on the fake tree ------------------------------------------------------------------


def churn_fake(total: int, live: int) -> Json:
    from tests.unit.test_churn import HEAP_GROWTH_BOUND_BYTES, churn

    # tmpfs when there is one: the fake tree is 13 small files per cgroup.
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None
    out: Json = {
        "total": total,
        "live": live,
        "heap_growth_bound_bytes": HEAP_GROWTH_BOUND_BYTES,
        "modes": {},
    }
    for mode in ("triggers", "sampling"):
        with tempfile.TemporaryDirectory(dir=scratch) as base:
            started = time.monotonic()
            report = churn(Path(base), total=total, live=live, mode=mode)
        doc = dict(report.__dict__)
        doc["seconds"] = round(time.monotonic() - started, 1)
        doc["within_bounds"] = (
            report.fds_after == report.fds_before
            and report.heap_growth_bytes < HEAP_GROWTH_BOUND_BYTES
            and report.busy_steps == 0
            and report.watch_ended == report.watched
            and (report.leftover_targets, report.leftover_core_states, report.leftover_wakeups) == (0, 0, 0)
        )
        log(f"fake churn {mode}: fds {report.fds_before}->{report.fds_after}, heap "
            f"{report.heap_growth_bytes:+d} B, within bounds: {doc['within_bounds']}")  # fmt: skip
        out["modes"][mode] = doc
    return out


# ---- 3. the VM --------------------------------------------------------------------------------------


def vm_campaign(
    work: Path, kill_runs: int, cache_mib: int, churn_total: int, churn_live: int, seed: int
) -> Json:
    basetemp = work / "vm"
    junit = work / "vm-junit.xml"
    env = dict(
        os.environ,
        REMEDIATOR_FAULTS_KILL_RUNS=str(kill_runs),
        REMEDIATOR_FAULTS_SEED=str(seed),
        REMEDIATOR_FAULTS_CACHE_MIB=str(cache_mib),
        REMEDIATOR_FAULTS_CHURN_TOTAL=str(churn_total),
        REMEDIATOR_FAULTS_CHURN_LIVE=str(churn_live),
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-m", "vm", "-p", "no:cacheprovider",
            f"--basetemp={basetemp}", f"--junitxml={junit}", "tests/vm/test_vm_faults.py"]  # fmt: skip
    started = time.monotonic()
    completed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    sys.stdout.write(completed.stdout[-4000:])
    out: Json = {
        "pytest_exit_code": completed.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "kill_runs": kill_runs,
        "seed": seed,
        "cache_mib": cache_mib,
        "churn": {"total": churn_total, "live": churn_live},
    }
    out["tests"] = _junit_outcomes(junit)
    reports: Json = {}
    for path in sorted(basetemp.glob("*/*.json")):
        reports[path.stem] = json.loads(path.read_text())
    out["reports"] = reports
    return out


def _junit_outcomes(path: Path) -> Dict[str, str]:
    if not path.exists():
        return {}
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[name] = "failed"
        elif case.find("skipped") is not None:
            outcomes[name] = "skipped"
        else:
            outcomes[name] = "passed"
    return outcomes


# ---- figures ------------------------------------------------------------------------------------


def fault_table(vm: Json) -> List[Json]:
    """One row per fault: what was injected, how often, and the verdict of its test."""
    tests = vm.get("tests", {})
    reports = vm.get("reports", {})
    cases = reports.get("executor_faults", {}).get("cases", {})
    state = reports.get("state_dir", {})
    hup = reports.get("sighup_burst", {})
    kill = reports.get("kill_loop", {})
    races = reports.get("reclaim_races", {})

    def verdict(test: str) -> str:
        return str(tests.get(test, "not run"))

    full = (state.get("phases") or [{}])[0]
    rows = [
        ("cgroup removed between decision and write", 1,
         "test_cgroup_removed_between_decision_and_write_is_gone_and_nothing_stays_recorded"),
        ("cgroup removed between open() and write() (ENODEV)", 1,
         "test_cgroup_removed_between_open_and_write_is_gone_not_an_error"),
        ("cgroup removed before the restore of its value", 1,
         "test_restore_of_a_removed_cgroup_forgets_its_original"),
        ("cgroup removed during a memory.reclaim write", 1,
         "test_cgroup_removed_during_a_reclaim_write_ends_the_reclaim_as_gone"),
        ("EBUSY burst within the retry budget", 5,
         "test_ebusy_burst_is_retried_within_the_budget_and_applied"),
        ("EBUSY beyond the retry budget", cases.get("ebusy_beyond_budget", {}).get("write_attempts", 0),
         "test_ebusy_beyond_the_budget_fails_with_errno_and_leaves_the_value_and_store_consistent"),
        ("EAGAIN from memory.reclaim (anon only, no swap)", cases.get("eagain_burst", {}).get("rounds", 0),
         "test_eagain_from_memory_reclaim_is_a_partial_outcome_every_time"),
        ("state directory full (ENOSPC) and read-only (EROFS)", (full.get("refusals") or 0) + 1,
         "test_full_then_read_only_state_directory_refuses_changes_says_so_and_keeps_observing"),
        ("SIGHUP x100 in one second", hup.get("signals_sent", 0),
         "test_sighup_100_times_in_a_second_reloads_keeps_watching_and_stops_cleanly"),
        ("SIGTERM during a memory.reclaim", 1 if races.get("sigterm_during_reclaim") else 0,
         "test_sigterm_during_a_reclaim_stops_cleanly_and_leaves_nothing_changed"),
        ("SIGKILL at a random point, then restart", len(kill.get("runs", [])),
         "test_sigkill_at_random_points_then_restart_leaves_no_clamp_behind"),
        ("journald restarted, stopped, killed while recording (full VM)", 4,
         "test_journald_restarted_stopped_and_killed_records_resume_and_the_daemon_never_restarts"),
    ]  # fmt: skip
    return [{"fault": fault, "injected": injected, "survived": verdict(test) == "passed", "test": test,
             "verdict": verdict(test)} for fault, injected, test in rows]  # fmt: skip


def kill_figures(vm: Json) -> Json:
    kill = vm.get("reports", {}).get("kill_loop", {})
    runs = kill.get("runs", [])
    original = kill.get("original_memory_high")
    restored = sum(r.get("recovery_results", []).count("restored") for r in runs)
    restored += sum(1 for r in kill.get("final_records", []) if r.get("REMEDIATOR_RESULT") == "restored")
    # A restart must find the original back, unless it had already clamped again itself.
    left_at_ready = sum(
        1
        for r in runs
        if "memory_high_at_ready" in r
        and not r.get("clamped_before_ready_read")
        and r["memory_high_at_ready"] != original
    )
    return {
        "runs": len(runs),
        "killed_before_ready": sum(1 for r in runs if r.get("killed_before_ready")),
        "killed_with_a_clamp_in_place": sum(1 for r in runs if r.get("memory_high_at_kill") != original),
        "values_restored_by_recovery": restored,
        "clamps_found_at_a_restart": left_at_ready,
        "clamps_left_behind_at_the_end": int(kill.get("final_memory_high") != original) if runs else None,
        "state_entries_at_the_end": kill.get("final_state_entries"),
        "quarantined_state_files": sum(r.get("quarantined", 0) for r in runs),
        "seed": kill.get("seed"),
    }


def vm_churn_figures(vm: Json) -> Json:
    churn = vm.get("reports", {}).get("churn", {})
    if not churn:
        return {}
    return {
        "total": churn.get("total"),
        "live": churn.get("live"),
        "churn_sec": churn.get("churn_sec"),
        "fds_before": churn.get("before", {}).get("fds"),
        "fds_peak": churn.get("peak_during", {}).get("fds"),
        "fds_after": churn.get("after", {}).get("fds"),
        "rss_kib_before": churn.get("before", {}).get("rss_kib"),
        "rss_kib_peak": churn.get("peak_during", {}).get("rss_kib"),
        "rss_kib_after": churn.get("after", {}).get("rss_kib"),
        "idle_cpu_after_sec_per_3s": churn.get("idle_cpu_after_sec"),
        # The sd_notify datagram's STATUS= line.
        "status_after_reload": next(
            (
                line[len("STATUS=") :]
                for n in churn.get("status_after_reload") or []
                for line in n.splitlines()
                if line.startswith("STATUS=")
            ),
            None,
        ),
        "verdict": vm.get("tests", {}).get(
            "test_churn_of_real_cgroups_leaves_no_fd_or_target_behind_and_no_busy_loop", "not run"
        ),
        "watch_started_records": churn.get("after", {}).get("watch_started"),
        "watch_ended_records": churn.get("after", {}).get("watch_ended"),
    }


def summarize(doc: Json) -> Json:
    fuzz = doc["fuzz"]
    inputs: Dict[str, Dict[str, int]] = {}
    findings = hangs = 0
    for engine in fuzz:
        for target in engine.get("targets", []):
            inputs.setdefault(target["target"], {})[engine["engine"]] = target["inputs"]
            findings += len(target["findings"])
            hangs += target["hangs"]
    vm = doc.get("vm", {})
    faults = fault_table(vm) if vm and not vm.get("unavailable") else []
    return {
        "inputs_tried": inputs,
        "inputs_tried_total": sum(sum(v.values()) for v in inputs.values()),
        "crashes_and_other_findings": findings,
        "hangs": hangs,
        "faults": faults,
        "faults_injected": sum(f["injected"] for f in faults),
        "faults_survived": sum(1 for f in faults if f["survived"]),
        "faults_not_survived": [f["fault"] for f in faults if f["survived"] is False],
        "sigkill_loop": kill_figures(vm) if faults else {},
        "churn_fake": {
            mode: {
                k: d[k]
                for k in (
                    "created",
                    "fds_before",
                    "fds_peak",
                    "fds_after",
                    "heap_growth_bytes",
                    "heap_peak_bytes",
                    "busy_steps",
                    "within_bounds",
                    "seconds",
                )
            }
            for mode, d in doc["churn_fake"]["modes"].items()
        },
        "churn_vm": vm_churn_figures(vm),
        "hostile": {name: case["passed"] for name, case in doc.get("hostile", {}).items()},
        "hostile_failed": [name for name, case in doc.get("hostile", {}).items() if not case["passed"]],
    }


def markdown(doc: Json) -> str:
    s = doc["summary"]
    lines = [
        f"# Reliability campaign, {doc['date']}",
        "",
        f"`{doc['command']}` on {doc['host']} (commit {doc['commit'][:12]}); "
        f"{doc['seconds'] / 60:.0f} min. Details: `{Path(doc['json']).name}`; how it works: "
        "bench/reliability/README.md.",
        "",
        f"- **Inputs tried:** {s['inputs_tried_total']:,} over {len(s['inputs_tried'])} parsers and loaders; "
        f"**{s['crashes_and_other_findings']} crashes or other findings, {s['hangs']} hangs.**",
        f"- **Faults:** {s['faults_injected']:,} injected, {s['faults_survived']} of "
        f"{sum(1 for f in s['faults'] if f['survived'] is not None)} kinds survived"
        + (f"; NOT survived: {', '.join(s['faults_not_survived'])}" if s["faults_not_survived"] else "")
        + ".",
    ]
    k = s.get("sigkill_loop") or {}
    if k:
        lines.append(
            f"- **SIGKILL loop:** {k['runs']} runs ({k['killed_before_ready']} killed while starting, "
            f"{k['killed_with_a_clamp_in_place']} with memory.high clamped); "
            f"{k['values_restored_by_recovery']} values restored by recovery; "
            f"clamps found at a restart: {k['clamps_found_at_a_restart']}; "
            f"**clamps left behind: {k['clamps_left_behind_at_the_end']}**."
        )
    lines += ["", "## Inputs per target", "", "| target | Hypothesis | atheris |", "| --- | ---: | ---: |"]
    for target, by_engine in s["inputs_tried"].items():
        lines.append(f"| {target} | {by_engine.get('hypothesis', 0):,} | {by_engine.get('atheris', 0):,} |")
    atheris: Json = next((e for e in doc["fuzz"] if e["engine"] == "atheris"), {})
    if atheris.get("unavailable"):
        lines += ["", f"atheris could not run here: {atheris['unavailable']}"]
    lines += [
        "",
        "## Faults (real kernel, light VM)",
        "",
        "| fault | injected | survived |",
        "| --- | ---: | --- |",
    ]
    for f in s["faults"]:
        survived = {True: "yes", False: "**no**", None: f["verdict"]}[f["survived"]]
        lines.append(f"| {f['fault']} | {f['injected']:,} | {survived} |")
    lines += ["", "## Churn", "", "| where | cgroups (live) | fds before / peak / after | memory |",
              "| --- | --- | --- | --- |"]  # fmt: skip
    for mode, c in s["churn_fake"].items():
        lines.append(
            f"| fake tree, {mode} | {c['created']:,} ({doc['churn_fake']['live']}) | {c['fds_before']} / "
            f"{c['fds_peak']} / {c['fds_after']} | Python heap {c['heap_growth_bytes']:+,} B "
            f"(bound {doc['churn_fake']['heap_growth_bound_bytes']:,}) |"
        )
    lines += hostile_markdown(doc.get("hostile", {}))
    v = s.get("churn_vm") or {}
    if v:
        lines.append(
            f"| real kernel, triggers | {v['total']:,} ({v['live']}) | {v['fds_before']} / {v['fds_peak']} / "
            f"{v['fds_after']} | RSS {v['rss_kib_before']:,} -> {v['rss_kib_after']:,} KiB (peak "
            f"{v['rss_kib_peak']:,}) |"
        )
        lines += [
            "",
            f"After the real churn: idle CPU {v['idle_cpu_after_sec_per_3s']} s over 3 s; its own status: "
            f'"{v["status_after_reload"]}"; bounds test: {v["verdict"]}.',
        ]
    return "\n".join(lines) + "\n"


def hostile_markdown(hostile: Json) -> List[str]:
    if not hostile:
        return []
    lines = ["", "## Hostile trees and files (issue 12)", "", "| case | passed | what was seen |",
             "| --- | --- | --- |"]  # fmt: skip
    glob = hostile.get("deep_glob", {})
    if "matching" in glob:
        worst = max(glob["matching"], key=lambda m: m["median_ms"])
        commands = ", ".join(f"`{c['command'].split(' --')[0]}` {c['seconds']} s" for c in glob["commands"])
        lines.append(f"| deep globs | {_yes(glob)} | slowest glob at depth 1,000: {worst['case']} "
                     f"{worst['median_ms']} ms median (bound {glob['glob_bound_ms']:.0f} ms); tree "
                     f"{glob['tree_depth']} deep: {commands} |")  # fmt: skip
    names = hostile.get("escape_names", {})
    if "outputs" in names:
        raw = sum(len(o["raw_control_characters"]) for o in names["outputs"])
        lines.append(f"| terminal-escape cgroup names | {_yes(names)} | {len(names['names'])} names through "
                     f"{len(names['outputs'])} commands: {raw} raw control characters |")  # fmt: skip
    state = hostile.get("oversized_state", {})
    if "cases" in state:
        said = "; ".join(f"{c['file']}: {c['quarantine_records']} quarantine record(s), {c['seconds']} s"
                         for c in state["cases"])  # fmt: skip
        lines.append(f"| oversized state files | {_yes(state)} | {said} |")
    tree = hostile.get("fifo_and_hard_link", {})
    if "runs" in tree:
        writer = tree.get("writer", {})
        lines.append(f"| FIFO and hard link in the tree | {_yes(tree)} | every command ended: "
                     f"{all(r['exit_code'] is not None for r in tree['runs'])}; linked file unchanged: "
                     f"{tree['linked_file_unchanged']}; writer on the hard link: "
                     f"{writer.get('write_to_hard_link', '?')[:60]} |")  # fmt: skip
    for name, case in hostile.items():
        if "error" in case:
            lines.append(f"| {name} | **no** | could not run: {case['error']} |")
    return lines


def _yes(case: Json) -> str:
    return "yes" if case.get("passed") else "**no**"


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    commit: str = done.stdout.strip()
    return commit or "unknown"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few minutes: every part, small sizes")
    parser.add_argument("--budget", type=int, help="Hypothesis inputs per target (10000)")
    parser.add_argument("--atheris-runs", type=int, help="atheris inputs per target (50000)")
    parser.add_argument("--no-vm", action="store_true", help="skip the real-kernel part")
    parser.add_argument(
        "--summarize", type=Path, metavar="JSON", help="only rewrite the summary and .md of a stored run"
    )
    parser.add_argument(
        "--out", type=Path, help="where the results go (bench/results; --quick: build/reliability-quick)"
    )
    args = parser.parse_args(argv)
    if args.summarize is not None:
        stored: Json = json.loads(args.summarize.read_text())
        stored["summary"] = summarize(stored)
        args.summarize.write_text(json.dumps(stored, indent=1, sort_keys=False, default=str) + "\n")
        args.summarize.with_suffix(".md").write_text(markdown(stored))
        return 0
    quick = args.quick
    budget = args.budget or (200 if quick else 10_000)
    atheris_runs = args.atheris_runs or (2_000 if quick else 50_000)
    seed = random.SystemRandom().randrange(1 << 31)
    work = WORK / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    doc: Json = {
        "date": date,
        "command": "make reliability" + (" QUICK=1" if quick else ""),
        "host": os.uname().nodename,
        "commit": _commit(),
        "quick": quick,
    }
    log(f"fuzzing with Hypothesis, {budget} inputs per target")
    doc["fuzz"] = [fuzz_hypothesis(budget)]
    log(f"fuzzing with atheris, {atheris_runs} inputs per target")
    doc["fuzz"].append(fuzz_atheris(atheris_runs, work))
    log("churn on the fake tree")
    doc["churn_fake"] = churn_fake(*((1_000, 100) if quick else (10_000, 500)))
    log("hostile trees and files")
    doc["hostile"] = hostile_trees(quick)
    for name, case in doc["hostile"].items():
        log(f"hostile {name}: {'passed' if case['passed'] else 'FAILED'} ({case['seconds']} s)")
    if args.no_vm:
        doc["vm"] = {"unavailable": "--no-vm"}
    else:
        log("faults and churn on a real kernel (VM)")
        sizes = (5, 256, 1_000, 100) if quick else (50, 512, 10_000, 500)
        doc["vm"] = vm_campaign(work, *sizes, seed=seed)
    doc["seconds"] = round(time.monotonic() - started, 1)
    doc["summary"] = summarize(doc)
    stem = "reliability-quick" if quick else f"reliability-{date}"
    out_dir: Path = args.out or (REPO / "build" / "reliability-quick" if quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    doc["json"] = str(json_path)
    json_path.write_text(json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(doc))
    log(f"wrote {json_path} and {stem}.md")
    s = doc["summary"]
    bad = (
        s["crashes_and_other_findings"] or s["hangs"] or s["faults_not_survived"]
        or not all(m["within_bounds"] for m in s["churn_fake"].values())
        or (s["sigkill_loop"] and s["sigkill_loop"]["clamps_left_behind_at_the_end"])
        or doc["vm"].get("pytest_exit_code", 0) != 0
        or s["hostile_failed"]
        or (s["churn_vm"] and s["churn_vm"]["verdict"] != "passed")
    )  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
