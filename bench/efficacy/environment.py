"""The environment a figure was measured in: it matters as much as the figure.

The same seed loop stalls ~20 % of the time in a CPU-starved VM under software
emulation and ~2 % natively on a 16-core host (issue 6), so every result carries
the kernel, CPU model, emulation, cores, date and load average it came from.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

Value = Union[str, int, float, None]


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


def emulation(cpuinfo: str, detect_virt: Callable[[], Optional[str]]) -> str:
    """How the CPU is provided: native, a hypervisor, or software emulation (TCG)."""
    model = cpu_model(cpuinfo)
    if "QEMU TCG" in model:
        return "software emulation (qemu TCG)"
    virt = detect_virt()
    if virt and virt != "none":
        return f"virtual machine ({virt})"
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    if " hypervisor" in flags:
        return "virtual machine (hypervisor flag)"
    return "none (bare metal)" if virt == "none" else "none seen (no hypervisor flag)"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _first_line_of(argv: List[str]) -> Optional[str]:
    """The first line a tool prints, or None: a missing or hanging tool must not cost a run
    (systemd-detect-virt once hung for 10 s in the VM, which has no systemd)."""
    tool = shutil.which(argv[0])
    if tool is None:
        return None
    try:
        completed = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, check=False, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = completed.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def _detect_virt() -> Optional[str]:
    return _first_line_of(["systemd-detect-virt"])


def _qemu_version() -> Optional[str]:
    return _first_line_of(["qemu-system-x86_64", "--version"])


def collect(role: str, with_qemu: bool = False) -> Dict[str, Value]:
    """This machine as the benchmark saw it. ``role``: "vm-guest", "vm-host" or "native"."""
    cpuinfo = _read("/proc/cpuinfo")
    load = _read("/proc/loadavg").split()
    mem_total_kib = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    uname = platform.uname()
    out: Dict[str, Value] = {
        "role": role,
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hostname": uname.node,
        "kernel": uname.release,
        "kernel_version": uname.version,
        "cpu_model": cpu_model(cpuinfo),
        "cores": os.cpu_count() or 0,
        "emulation": emulation(cpuinfo, _detect_virt),
        "load_average": " ".join(load[:3]),
        "mem_total_mib": mem_total_kib // 1024,
    }
    if with_qemu:
        out["qemu"] = _qemu_version()
    return out
