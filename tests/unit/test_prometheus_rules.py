"""The shipped alert rules and the metrics textfile, checked by Prometheus' own promtool.

promtool comes from Debian's `prometheus` package (scripts/bootstrap unpacks it into .venv/bin). Outside CI a
machine without it skips these tests and says why; in CI (CI=true) its absence is a failure, so the
rules can never ship unchecked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from remediator.identity import parse_cgroup
from remediator.metrics import CgroupPressure, Metrics, PolicyState, WatchMode
from remediator.records import Knob, Record, RecordType, Result

REPO = Path(__file__).resolve().parent.parent.parent
RULES = REPO / "packaging" / "prometheus" / "remediator-rules.yml"
RULE_TESTS = REPO / "tests" / "fixtures" / "prometheus" / "remediator-rules.test.yml"


def promtool(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # scripts/bootstrap unpacks it into the venv; a system-wide one will do as well.
    tool = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "promtool is missing in CI: scripts/bootstrap unpacks it from Debian's prometheus package"
            )
        pytest.skip("promtool not found (scripts/bootstrap unpacks it into .venv/bin); in CI this fails")
    return subprocess.run(
        [tool, *args], input=stdin, capture_output=True, text=True, check=False, timeout=120
    )


def test_the_shipped_rules_are_valid() -> None:
    checked = promtool("check", "rules", str(RULES))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout


def test_each_alert_fires_on_its_case_and_not_on_the_others() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))

    assert tested.returncode == 0, tested.stdout + tested.stderr


def scripted_metrics() -> Metrics:
    metrics = Metrics()
    records: List[Record] = [
        Record(
            RecordType.PRESSURE_CONFIRMED, "m", policy="services-cache", cgroup="system.slice/web.service"
        ),
        Record(
            RecordType.ACTION_APPLIED,
            "m",
            policy="services-cache",
            action=Knob.RECLAIM,
            result=Result.APPLIED,
            extra={"RECLAIM_COMPLETED_BYTES": "104857600"},
        ),
        Record(
            RecordType.ACTION_DECLINED,
            "m",
            policy="services-cache",
            action=Knob.MEMORY_HIGH,
            result=Result.DECLINED,
            extra={"REASON": "rung1:no_room_above_floor"},
        ),
        Record(
            RecordType.ROLLED_BACK, "m", policy="services-cache", action=Knob.MEMORY_HIGH, result="restored"
        ),
        Record(
            RecordType.BACKED_OFF, "m", policy="services-cache", action=Knob.MEMORY_HIGH, result="restored"
        ),
    ]
    for record in records:
        metrics.observe(record)
    metrics.set_watched_targets({("services-cache", WatchMode.TRIGGER): 12, ("node", WatchMode.SAMPLING): 1})
    metrics.set_owned_values({"memory_high": 1})
    metrics.set_policies({PolicyState.LOADED: 2, PolicyState.DISABLED: 1})
    metrics.reload_succeeded(1_764_940_000.0)
    metrics.set_cgroup_pressure([CgroupPressure(parse_cgroup('system.slice/we"ird\\name.service'), 23.9)])
    return metrics


def test_the_textfile_passes_promtools_metric_lint(tmp_path: Path) -> None:
    path = tmp_path / "remediator.prom"
    scripted_metrics().write_textfile(path)

    checked = promtool("check", "metrics", stdin=path.read_text())

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""
