"""The benchmark directly on a real cgroup v2 host (``--native``): an operator's own node.

It refuses, with the reason, unless it runs as root on a host whose cgroup root
is cgroup2 with the memory controller (a hybrid layout, like the development
machines', is refused). It creates its own cgroup under the root
(``remediator-bench/bench.service``), never touches another one, and removes
everything it created even when interrupted (Ctrl-C, SIGTERM, SIGHUP).

Natively the shipped policies would select the node's real services and change
node-wide sysctls, so the daemon gets only the shipped cgroup policies with
their ``include`` pointed at the benchmark's cgroup, everything else in them
unchanged; node policies are left out (they would change vm.* for every tenant).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import Dict, Iterator, List, Mapping, Optional

import yaml

from bench.efficacy.runner import RunSetup
from bench.efficacy.scenarios import DATA_FILE_MIB, DATA_FILES, NATIVE_CGROUP
from bench.efficacy.vm import write_data_file
from remediator.kernel.capabilities import probe
from remediator.kernel.roots import KernelRoots

DEFAULT_DATA_DIR = Path("/var/tmp/remediator-bench")
# Filesystems whose "page cache" is not the reclaimable cache of a block device.
NOT_A_BLOCK_DEVICE = frozenset({"tmpfs", "ramfs", "9p", "virtiofs", "nfs", "nfs4", "fuse", "squashfs"})


class NativeRefused(Exception):
    """This host cannot run the native benchmark; the message says why."""


def refusal_reason(roots: KernelRoots, euid: int) -> Optional[str]:
    """Why the native benchmark cannot run here, or None when it can."""
    capabilities = probe(roots)
    # A real cgroup2 mount, not merely a tree that looks like one (a copied tree
    # replayed with --cgroup-root): the benchmark writes to the kernel.
    is_v2_mount = capabilities.cgroup_root_is_cgroup2 and "memory" in capabilities.root_controllers
    if not is_v2_mount:
        return (
            "the native benchmark needs a cgroup v2 memory controller at "
            f"{roots.cgroup_root}, and this host has none: {capabilities.explanation()} "
            "Run it in the VM instead: python -m bench.efficacy (without --native)."
        )
    if not capabilities.memory_reclaim:
        return f"kernel {capabilities.kernel_release} has no memory.reclaim (5.19+), which remediator needs"
    if not capabilities.psi_present:
        return f"PSI is not available on this kernel ({capabilities.psi_error})"
    if euid != 0:
        return "the native benchmark creates a cgroup under the root and mounts a tmpfs: run it as root"
    return None


def filesystem_type(path: Path, mounts_text: str) -> str:
    """The type of the filesystem ``path`` is on (the longest mount point that contains it)."""
    resolved = str(path.resolve())
    best, best_type = "", ""
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def ensure_data_files(data_dir: Path) -> List[Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    fstype = filesystem_type(data_dir, Path("/proc/self/mounts").read_text())
    if fstype in NOT_A_BLOCK_DEVICE:
        raise NativeRefused(
            f"{data_dir} is on {fstype}: the scan loop needs files on a block device "
            "(choose another --data-dir)"
        )
    paths = []
    for name in DATA_FILES:
        path = data_dir / name
        if not path.is_file() or path.stat().st_size != DATA_FILE_MIB << 20:
            write_data_file(path, DATA_FILE_MIB)
        paths.append(path)
    return paths


def confined_policies(shipped: Mapping[str, str], cgroup: str) -> Dict[str, str]:
    """The shipped cgroup policies, selecting only ``cgroup``; node policies dropped."""
    out: Dict[str, str] = {}
    for name, text in shipped.items():
        document = yaml.safe_load(text)
        target = document.get("target", {})
        if target.get("kind") != "cgroups":
            continue
        target["include"] = [cgroup]
        target["exclude"] = []
        out[name] = yaml.safe_dump(document, sort_keys=False)
    return out


def _raise_interrupt(signum: int, _frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every clean-up on the way runs."""
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def native_setup(shipped: Mapping[str, str], data_dir: Path) -> Iterator[RunSetup]:
    roots = KernelRoots()
    reason = refusal_reason(roots, os.geteuid())
    if reason is not None:
        raise NativeRefused(reason)
    data_files = ensure_data_files(data_dir)
    parent = roots.cgroup_dir(NATIVE_CGROUP.split("/")[0])
    with tempfile.TemporaryDirectory(prefix="remediator-bench-") as work:
        try:
            yield RunSetup(
                roots=roots,
                cgroup=NATIVE_CGROUP,
                data_files=data_files,
                scratch_dir=data_dir,
                work_dir=Path(work),
                policies=confined_policies(shipped, NATIVE_CGROUP),
            )
        finally:
            # Ours by name; left behind only if a previous run was killed with SIGKILL.
            with contextlib.suppress(OSError):
                parent.rmdir()
