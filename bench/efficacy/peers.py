"""The peer the matrix compares against: Facebook's Senpai, run as a separate program.

Senpai is GPL-2.0 and stays outside the project: the benchmark runs
``python3 senpai.py CGROUP_PATH`` with its defaults from a folder the user gives
(default ``<project>/../shared/peers/senpai/``), after checking the file's sha256
against the pinned commit's, so that the series is reproducible. Where the file
is absent or differs, the series is skipped with the reason (``senpai_status``).

What the run keeps: Senpai's log (every ``adjust`` is one change of memory.high),
its CPU time, and memory.high as Senpai left it (it restores nothing on exit).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SENPAI_DIR = REPO_ROOT.parent / "shared" / "peers" / "senpai"
SENPAI_FILE = "senpai.py"
# facebookincubator/senpai at c51e8e21de5c459406a015c1860d5f6c5ff6a426 (2019-08-20), unchanged.
SENPAI_COMMIT = "c51e8e21de5c459406a015c1860d5f6c5ff6a426"
SENPAI_SHA256 = "b4acb8f851259f1b84db50cd4372719555b99f285839265dc1235aea91ad92bf"


@dataclass(frozen=True)
class SenpaiStatus:
    """Whether the Senpai series can run, and why not."""

    path: Path
    usable: bool
    reason: str

    def as_json(self) -> Dict[str, Any]:
        return {"path": str(self.path), "usable": self.usable, "reason": self.reason, "commit": SENPAI_COMMIT}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def senpai_status(directory: Path, expected_sha256: str = SENPAI_SHA256) -> SenpaiStatus:
    path = directory / SENPAI_FILE
    if not path.is_file():
        return SenpaiStatus(
            path,
            False,
            f"{path} is absent: the senpai series is skipped (put facebookincubator/senpai's senpai.py "
            f"at commit {SENPAI_COMMIT} there, or pass --senpai DIR)",
        )
    digest = sha256_of(path)
    if digest != expected_sha256:
        return SenpaiStatus(
            path,
            False,
            f"{path} has sha256 {digest}, not the pinned {expected_sha256} (commit {SENPAI_COMMIT}): "
            "the senpai series is skipped",
        )
    return SenpaiStatus(path, True, f"sha256 {digest} (commit {SENPAI_COMMIT})")


def adjustments(log_lines: Sequence[str]) -> List[float]:
    """The factors of Senpai's memory.high changes, from its log (``  adjust: <factor>``)."""
    out: List[float] = []
    for line in log_lines:
        _, found, rest = line.partition("adjust: ")
        if found:
            try:
                out.append(float(rest.strip()))
            except ValueError:
                continue
    return out


def process_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a process from /proc/PID/stat (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class SenpaiProcess:
    """Senpai on one cgroup, outside it, with its defaults; its log goes to ``log_file``."""

    def __init__(self, senpai: Path, cgroup_path: Path, log_file: Path, python: str = sys.executable) -> None:
        self.log_file = log_file
        self.handle = open(log_file, "w")  # noqa: SIM115 (closed in stop(): it outlives __init__)
        # -u: its log is read after it is stopped; unbuffered so nothing is lost to the signal.
        self.process = subprocess.Popen(
            [python, "-u", str(senpai), str(cgroup_path)],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )
        self.cpu_sec: Optional[float] = None

    def stop(self) -> Dict[str, Any]:
        self.cpu_sec = process_cpu_seconds(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.handle.close()
        lines = self.log_file.read_text(errors="replace").splitlines()
        factors = adjustments(lines)
        return {
            "adjustments": len(factors),
            "loosened": sum(1 for f in factors if f > 0),
            "tightened": sum(1 for f in factors if f < 0),
            "cpu_sec": None if self.cpu_sec is None else round(self.cpu_sec, 3),
            "exit_code": self.process.returncode,
            # Its first and last lines: the configuration and where it ended.
            "log_head": lines[:12],
            "log_tail": lines[-5:],
        }
