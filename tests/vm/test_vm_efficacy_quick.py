"""The efficacy benchmark's quick mode (issue 6: "a quick mode ... that CI runs").

`python -m bench.efficacy --quick` end to end: every scenario (seed, tmpfs-heavy,
beyond-limit) x every series (none, static, remediator, dry-run), one 30 s run
each, one light VM per scenario, results JSON + Markdown written. Judged here
are the targets that one run can decide: OOM kills, what the records say, and
that dry-run wrote nothing. Stall and throughput ratios need the full set's
three runs per series on a quiet machine (`make bench-efficacy`); this run only
prints them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from bench.efficacy.__main__ import RESULTS_STEM, main
from bench.efficacy.scenarios import DEFAULT_SCENARIOS, SERIES
from tests.vm import harness

pytestmark = pytest.mark.vm

# (scenario, target name) pairs one run decides; the others are printed, not judged.
DECIDED_BY_ONE_RUN: Tuple[Tuple[str, str], ...] = (
    ("seed", "zero OOM kills wherever none has zero"),
    ("tmpfs-heavy", "records say why memory.high was not lowered"),
    ("beyond-limit", "no more OOM kills than none"),
    ("beyond-limit", "a record explains that the memory is not reclaimable"),
)
NOTHING_WRITTEN = "no write recorded, memory.high left at max"


def test_quick_mode_runs_every_scenario_and_series_and_meets_the_targets_one_run_decides(
    vm_light: harness.LightVm, tmp_path: Path
) -> None:
    rc = main(["--quick", "--out", str(tmp_path)])

    results: Dict[str, Any] = json.loads((tmp_path / f"{RESULTS_STEM}.json").read_text())
    assert (tmp_path / f"{RESULTS_STEM}.md").is_file()
    failed = [
        f"{run['scenario']}/{run['series']}: {run['error']}" for run in results["runs"] if "error" in run
    ]
    assert rc == 0 and not failed, failed
    ran = sorted((run["scenario"], run["series"]) for run in results["runs"])
    assert ran == sorted((scenario, series) for scenario in DEFAULT_SCENARIOS for series in SERIES)

    targets: List[Dict[str, Any]] = results["targets"]
    for target in targets:
        print(f"\n{target['scenario']}: {target['target']}: {target['met']} - {target['detail']}", end="")
    by_name = {(t["scenario"], t["target"]): t for t in targets}
    for key in DECIDED_BY_ONE_RUN:
        assert by_name[key]["met"] is True, by_name[key]
    for scenario in DEFAULT_SCENARIOS:
        dry_run = by_name[(scenario, "dry-run within noise of none, and nothing changed")]
        assert NOTHING_WRITTEN in dry_run["detail"], dry_run
