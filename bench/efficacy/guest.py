"""The benchmark inside the test VM: mount the data disk, run the plan's runs, write the results.

Run by the host (``vm.py``) as ``python -m bench.efficacy.guest /out/plan.json``.
The data disk (ext4, the scan loop's files) is ``/dev/vdb``, mounted read-only;
a scratch disk for dirty writes, when the plan needs one, is ``/dev/vdc``.
Results are rewritten after every run, so a VM that runs out of time still
returns the runs it finished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List

from bench.efficacy import environment
from bench.efficacy.peers import senpai_status
from bench.efficacy.runner import RunSetup, run_one
from bench.efficacy.scenarios import DATA_FILES, TREE_DIR, VM_CGROUP, scenario_named
from remediator.kernel.roots import KernelRoots

OUT_DIR = Path(os.environ.get("VM_OUT", "/out"))
WORK_DIR = Path("/run/bench")
DATA_MOUNT = WORK_DIR / "data"
SCRATCH_MOUNT = WORK_DIR / "scratch"
DATA_DEVICE = "/dev/vdb"
SCRATCH_DEVICE = "/dev/vdc"
PG_DEVICE = "/dev/vdd"
PG_MOUNT = WORK_DIR / "pg"


def _mount(device: str, where: Path, read_only: bool) -> None:
    where.mkdir(parents=True, exist_ok=True)
    # noload: a read-only mount must not replay the journal (the image is shared by every VM).
    options = "ro,noload" if read_only else "rw"
    subprocess.run(["mount", "-t", "ext4", "-o", options, device, str(where)], check=True)


def main(plan_file: str) -> int:
    if os.environ.get("VM_OUT") is None:
        sys.exit("bench.efficacy.guest runs only inside the test VM (python -m bench.efficacy --help)")
    plan: Dict[str, Any] = json.loads(Path(plan_file).read_text())
    out_file = OUT_DIR / plan.get("results_name", "results.json")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    _mount(DATA_DEVICE, DATA_MOUNT, read_only=True)
    scratch = WORK_DIR
    if plan.get("scratch_drive"):
        _mount(SCRATCH_DEVICE, SCRATCH_MOUNT, read_only=False)
        scratch = SCRATCH_MOUNT
    pg_data = None
    if plan.get("pg_drive"):
        from bench.efficacy.vm import PG_DATA_NAME

        _mount(PG_DEVICE, PG_MOUNT, read_only=False)
        pg_data = PG_MOUNT / PG_DATA_NAME
    senpai = None
    if plan.get("senpai"):
        # Checked again here: the file the guest runs is the one whose hash was pinned.
        status = senpai_status(Path(plan["senpai"]).parent)
        senpai = status.path if status.usable else None
        print(f"[bench] senpai: {status.reason}", flush=True)
    setup = RunSetup(
        roots=KernelRoots(),
        cgroup=VM_CGROUP,
        data_files=[DATA_MOUNT / name for name in DATA_FILES],
        scratch_dir=scratch,
        work_dir=WORK_DIR,
        policies=plan["policies"],
        tree_dir=DATA_MOUNT / TREE_DIR,
        pg_data_dir=pg_data,
        senpai=senpai,
    )
    report: Dict[str, Any] = {"environment_guest": environment.collect("vm-guest"), "runs": []}
    runs: List[Dict[str, Any]] = report["runs"]
    failures = 0
    for item in plan["runs"]:
        scenario = scenario_named(item["scenario"])
        print(f"[bench] {scenario.name} / {item['series']} ({item['duration_sec']:g} s)", flush=True)
        try:
            run_setup = replace(setup, policies=item["policies"]) if "policies" in item else setup
            run = run_one(scenario, item["series"], float(item["duration_sec"]), run_setup)
            run["policy_variant"] = item.get("policy_variant", "shipped")
            run["repeat"] = item.get("repeat", 0)
            metrics = run["metrics"]
            print(
                f"[bench]   full stall {metrics.get('full_stall_pct')} %, "
                f"{metrics.get('throughput_mib_s')} MiB/s, oom kills {metrics.get('oom_kills')}",
                flush=True,
            )
        except Exception:  # one failed run must not lose the others
            failures += 1
            run = {**item, "error": traceback.format_exc()}
            print(run["error"], flush=True)
        runs.append(run)
        report["environment_guest_end"] = environment.collect("vm-guest")
        out_file.write_text(json.dumps(report))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
