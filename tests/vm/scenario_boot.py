"""One VM boot that runs a group of guest scenario modules in turn, and reads their reports.

Shared by the real-kernel test files: each scenario module (``python -m <package>.<name>``)
writes ``<name>.json`` to $VM_OUT, with ``error`` holding its traceback when it failed.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from tests.vm import harness

PYTHON = shlex.quote(sys.executable)
MIB = 1 << 20

Report = Dict[str, Any]


@dataclass(frozen=True)
class ScenarioBoot:
    """One VM that ran a group of scenarios, and their reports."""

    result: harness.VmResult
    out_dir: Path

    def report(self, name: str) -> Report:
        """The scenario's report; fails with the console's tail if it is missing or the scenario raised."""
        path = self.out_dir / f"{name}.json"
        if not path.exists():
            pytest.fail(f"scenario {name} wrote no report\n{self.result.describe()}", pytrace=False)
        report: Report = json.loads(path.read_text())
        if report.get("error"):
            pytest.fail(f"scenario {name} failed in the guest:\n{report['error']}", pytrace=False)
        return report


def _disk_image(out_dir: Path, disk_files_mib: Mapping[str, int]) -> Path:
    files = out_dir / "disk-files"
    files.mkdir(parents=True, exist_ok=True)
    for file_name, mib in disk_files_mib.items():
        # Not zeros: a file of zeros could be stored sparse, and holes are not real reads.
        with open(files / file_name, "wb") as f:
            for _ in range(mib):
                f.write(b"\x5a" * MIB)
    size_mib = sum(disk_files_mib.values()) * 5 // 4 + 32
    image = harness.make_ext4_image(out_dir / "disk.raw", size_mib, files_dir=files)
    for path in files.iterdir():
        path.unlink()
    files.rmdir()
    return image


def boot_scenarios(
    vm_light: harness.LightVm,
    out_dir: Path,
    scenarios: Sequence[Tuple[str, Sequence[str]]],
    *,
    package: str,
    timeout_sec: float,
    disk_files_mib: Optional[Mapping[str, int]] = None,
    mem_mib: int = 1024,
) -> ScenarioBoot:
    """Boot once and run each ``(scenario, args)`` of ``package`` in turn, whatever the previous one did.

    ``disk_files_mib``: files (name -> MiB) for an ext4 drive, attached as /dev/vdb.
    """
    drives: List[Path] = [_disk_image(out_dir, disk_files_mib)] if disk_files_mib else []
    lines = ["status=0"]
    for name, args in scenarios:
        argv = " ".join(shlex.quote(arg) for arg in args)
        lines.append(f"{PYTHON} -m {package}.{name} {argv} || status=1")
    lines.append("exit $status")
    result = vm_light.boot(
        "\n".join(lines), timeout_sec=timeout_sec, drives=drives, out_dir=out_dir, mem_mib=mem_mib
    )
    for drive in drives:
        # Hundreds of MiB each, and pytest keeps the folders of the last runs: keep the reports only.
        drive.unlink(missing_ok=True)
    print(f"VM running {', '.join(n for n, _ in scenarios)}: {result.elapsed:.1f} s, exit {result.exit_code}")
    return ScenarioBoot(result, out_dir)
