"""Property-based fuzzing of every target with Hypothesis, counting every input.

    python -m tests.fuzz.hypothesis_campaign --budget 10000 --out /tmp/fuzz.json

Each target gets ``budget`` generated inputs (``strategies.STRATEGIES``). A
finding (crash, unlocated rejection, broken invariant: see ``targets``) is
recorded with its input and the run goes on, so one run counts every input
and every distinct finding. An input slower than ``HANG_SEC`` counts as a
hang. The slowest inputs of each target are kept as candidates for the
regression corpus (``tests/fuzz/corpus``), which CI replays.

Timing here is measurement, not a test assertion: the CI test
(tests/unit/test_fuzz_corpus.py) never looks at the clock.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.strategies import STRATEGIES
from tests.fuzz.targets import TARGETS, FuzzFinding, run_target

# One input of any target takes milliseconds; a second is a hang in all but name.
HANG_SEC = 2.0
KEEP_SLOWEST = 5
KEEP_FINDINGS = 20


@dataclass
class TargetRun:
    target: str
    engine: str = "hypothesis"
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    findings: List[str] = field(default_factory=list)
    hangs: int = 0
    slowest_sec: float = 0.0
    elapsed_sec: float = 0.0
    # Not in the JSON summary: the inputs themselves.
    finding_inputs: List[bytes] = field(default_factory=list, repr=False)
    slowest_inputs: List[Tuple[float, bytes]] = field(default_factory=list, repr=False)

    def summary(self) -> Dict[str, object]:
        out = asdict(self)
        out.pop("finding_inputs")
        out.pop("slowest_inputs")
        out["distinct_findings"] = len(self.findings)
        return out


def fuzz_target(name: str, budget: int, seed: Optional[int] = None) -> TargetRun:
    """Run ``budget`` generated inputs through target ``name``; never raises on a finding."""
    run = TargetRun(name)
    slowest: List[Tuple[float, bytes]] = []
    seen_findings: Dict[str, bytes] = {}

    @settings(
        max_examples=budget,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=seed is not None,
    )
    @given(STRATEGIES[name])
    def one(data: bytes) -> None:
        started = time.perf_counter()
        try:
            verdict = run_target(name, data)
        except FuzzFinding as finding:
            signature = str(finding).split("\n", 1)[0][:300]
            if signature not in seen_findings and len(seen_findings) < KEEP_FINDINGS:
                seen_findings[signature] = data
        else:
            if verdict.accepted:
                run.accepted += 1
            else:
                run.rejected += 1
        spent = time.perf_counter() - started
        run.inputs += 1
        if spent > HANG_SEC:
            run.hangs += 1
        entry = (spent, data)
        if len(slowest) < KEEP_SLOWEST:
            heapq.heappush(slowest, entry)
        elif spent > slowest[0][0]:
            heapq.heapreplace(slowest, entry)

    started = time.perf_counter()
    one()
    run.elapsed_sec = round(time.perf_counter() - started, 3)
    run.findings = list(seen_findings)
    run.finding_inputs = list(seen_findings.values())
    run.slowest_inputs = sorted(slowest, reverse=True)
    run.slowest_sec = round(run.slowest_inputs[0][0], 4) if run.slowest_inputs else 0.0
    return run


def save_inputs(run: TargetRun, directory: Path) -> List[Path]:
    """Write a run's findings (crash-*) and slowest inputs (slow-*) under ``directory/<target>/``."""
    out = directory / run.target
    out.mkdir(parents=True, exist_ok=True)
    written = []
    named = [("crash", data) for data in run.finding_inputs] + [("slow", d) for _, d in run.slowest_inputs]
    for kind, data in named:
        path = out / f"{kind}-{hashlib.sha1(data).hexdigest()[:12]}"
        path.write_bytes(data)
        written.append(path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=int, default=10_000, help="inputs per target (default 10000)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target names")
    parser.add_argument("--out", type=Path, required=True, help="JSON summary to write")
    parser.add_argument("--save-inputs", type=Path, help="write findings and slowest inputs here")
    args = parser.parse_args(argv)
    runs = []
    for name in args.targets.split(","):
        run = fuzz_target(name, args.budget)
        runs.append(run)
        print(
            f"{name}: {run.inputs} inputs, {run.accepted} accepted, {run.rejected} rejected, "
            f"{len(run.findings)} findings, {run.hangs} hangs, slowest {run.slowest_sec:.3f}s, "
            f"{run.elapsed_sec:.1f}s",
            flush=True,
        )
        for finding in run.findings:
            print(f"  FINDING: {finding}", flush=True)
        if args.save_inputs is not None:
            save_inputs(run, args.save_inputs)
    args.out.write_text(json.dumps([run.summary() for run in runs], indent=2) + "\n")
    return 1 if any(run.findings or run.hangs for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
