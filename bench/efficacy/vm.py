"""Host side of the benchmark in the test VM (tests/vm/harness.py's light shape).

The scan loop needs real page cache, so its files are on an ext4 image attached
as /dev/vdb (built once, cached outside the repository like the VM itself). One
VM runs one repeat of one scenario: every series in turn, each in a fresh
cgroup, with the files evicted from the page cache in between.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from bench.efficacy.scenarios import (
    DATA_FILE_MIB,
    DATA_FILES,
    PG_SCALE,
    TREE_DIR,
    TREE_FILE_MIB,
    TREE_FILES,
)
from tests.vm import harness

# 2: the noisy neighbour's tree beside the scan loop's files.
IMAGE_RECIPE_VERSION = 2
# Boot, daemon start-up (Python under TCG), cgroup set-up and clean-up per run.
VM_BOOT_SEC = 30.0
# A guard, not a cost: measured up to ~60 s for a daemon run (its start-up under TCG while
# another VM loaded the host, the neighbour's two services, pgbench's server start and prewarm);
# a neighbour run hit the former 45 s.
PER_RUN_OVERHEAD_SEC = 90.0
# Room for fio's buffered writes (1.5 x memory.max) and the dirty-write variant; sparse.
SCRATCH_IMAGE_MIB = 1024
# The light VM runs the host's binaries (its root, read-only over 9p): the matrix's tools
# must be installed on the host, as qemu is (.ci/vm-deps.sh lists them too).
TOOL_PACKAGES = ("fio", "postgresql-15")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_IMAGE_RECIPE_VERSION = 1
PG_IMAGE_MIB = 1536
PG_DATA_NAME = "pgdata"


def bench_cache_dir() -> Path:
    configured = os.environ.get("REMEDIATOR_BENCH_CACHE")
    root = Path(configured) if configured else Path.home() / ".cache" / "remediator" / "bench"
    return root.expanduser().resolve()


def write_data_file(path: Path, size_mib: int) -> None:
    """Non-zero data: mkfs.ext4 -d turns all-zero blocks into holes, which read without I/O."""
    block = bytearray(os.urandom(1 << 20))
    with open(path, "wb") as handle:
        for index in range(size_mib):
            block[:8] = index.to_bytes(8, "little")  # no two MiB alike
            handle.write(block)


def ensure_data_image(file_mib: int = DATA_FILE_MIB) -> Path:
    """The ext4 image with the scan loop's files (built once per size and recipe)."""
    cache = bench_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    image = cache / f"efficacy-data-{len(DATA_FILES)}x{file_mib}MiB-v{IMAGE_RECIPE_VERSION}.raw"
    if image.is_file():
        return image
    with tempfile.TemporaryDirectory(prefix="efficacy-data-", dir=cache) as scratch_name:
        scratch = Path(scratch_name)
        files = scratch / "files"
        files.mkdir()
        for name in DATA_FILES:
            write_data_file(files / name, file_mib)
        tree = files / TREE_DIR
        for index in range(TREE_FILES):
            directory = tree / f"d{index // 16:02d}"
            directory.mkdir(parents=True, exist_ok=True)
            write_data_file(directory / f"f{index:03d}.bin", TREE_FILE_MIB)
        data_mib = len(DATA_FILES) * file_mib + TREE_FILES * TREE_FILE_MIB
        image_size = data_mib + 64 + data_mib // 16
        partial = harness.make_ext4_image(scratch / "image.raw", image_size, files_dir=files)
        partial.replace(image)
    return image


def ensure_tools() -> None:
    """fio and PostgreSQL 15 on the host (the light VM sees the host's root)."""
    harness._Apt.ensure_installed(TOOL_PACKAGES)


def _as_postgres(argv: Sequence[str], what: str) -> None:
    completed = subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, check=False, timeout=900
    )
    if completed.returncode != 0:
        raise harness.VmUnavailable(f"{what} failed ({completed.returncode}): {completed.stderr[-2000:]}")


def ensure_pg_image(scale: int = PG_SCALE) -> Path:
    """An ext4 image holding a PostgreSQL 15 cluster with pgbench's tables at ``scale``.

    Built once on the host (initdb, pgbench -i: a minute natively, far longer under TCG)
    with the host's PostgreSQL run as an ordinary process on a Unix socket in the build
    folder (no TCP, no service, nothing of the host's changed), then cached like the data
    image. Each VM gets its own copy (the server writes to it)."""
    ensure_tools()
    cache = bench_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    image = cache / f"efficacy-pg-scale{scale}-v{PG_IMAGE_RECIPE_VERSION}.raw"
    if image.is_file():
        return image
    # Not under /root: the postgres user must reach the build folder.
    build = Path(tempfile.mkdtemp(prefix="remediator-pg-build-", dir="/var/tmp"))
    try:
        build.chmod(0o755)
        files = build / "files"
        data = files / PG_DATA_NAME
        socket_dir = build / "socket"
        for directory in (files, socket_dir):
            directory.mkdir()
            shutil.chown(directory, user="postgres")
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], "initdb")
        options = f"-c listen_addresses='' -c unix_socket_directories={socket_dir}"
        # -l: the server's output to a file, not to our pipes (which it would hold open).
        log = socket_dir / "server.log"
        _as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"],
            "pg_ctl start",
        )
        try:
            _as_postgres(
                [
                    str(PG_BIN / "pgbench"),
                    "-i",
                    "-q",
                    "-s",
                    str(scale),
                    "-h",
                    str(socket_dir),
                    "-U",
                    "postgres",
                    "postgres",
                ],
                "pgbench -i",
            )
        finally:
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], "pg_ctl stop")
        partial = harness.make_ext4_image(build / "pg.raw", PG_IMAGE_MIB, files_dir=files)
        shutil.move(str(partial), str(image))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return image


def vm_timeout_sec(runs: Sequence[Mapping[str, Any]]) -> float:
    return VM_BOOT_SEC + sum(float(run["duration_sec"]) + PER_RUN_OVERHEAD_SEC for run in runs)


def run_in_vm(
    vm: harness.LightVm,
    runs: Sequence[Mapping[str, Any]],
    policies: Mapping[str, str],
    out_dir: Path,
    *,
    scratch_drive: bool = False,
    pg_image: Optional[Path] = None,
    senpai: Optional[Path] = None,
) -> Dict[str, Any]:
    """Boot one VM that runs ``runs`` in order; returns the guest's report plus the VM's outcome.

    Drives: /dev/vdb the data image (read-only, shared), /dev/vdc a fresh scratch disk, /dev/vdd
    a copy of the PostgreSQL image when ``pg_image`` is given (a scratch disk comes with it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch_drive = scratch_drive or pg_image is not None
    plan = {
        "runs": list(runs),
        "policies": dict(policies),
        "scratch_drive": scratch_drive,
        "pg_drive": pg_image is not None,
        "senpai": None if senpai is None else str(senpai),
    }
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    # Read-only: the cached image is shared by every VM, also by concurrent runs (a test beside a benchmark).
    drives: List[harness.Drive] = [harness.ReadOnlyDrive(ensure_data_image())]
    with contextlib.ExitStack() as stack:
        scratch_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="efficacy-scratch-")))
        if scratch_drive:
            drives.append(harness.make_ext4_image(scratch_dir / "scratch.raw", SCRATCH_IMAGE_MIB))
        if pg_image is not None:
            copy = scratch_dir / "pg.raw"
            subprocess.run(["cp", "--sparse=always", str(pg_image), str(copy)], check=True)
            drives.append(copy)
        python = shlex.quote(sys.executable)
        result = vm.boot(
            f"{python} -m bench.efficacy.guest {harness.GUEST_OUT_DIR}/plan.json",
            timeout_sec=vm_timeout_sec(runs),
            drives=drives,
            out_dir=out_dir,
        )
    results_file = out_dir / "results.json"
    report: Dict[str, Any] = json.loads(results_file.read_text()) if results_file.is_file() else {"runs": []}
    report["vm"] = {
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "elapsed_sec": round(result.elapsed, 1),
    }
    if not result.ok:
        report["vm"]["describe"] = result.describe(tail_lines=60)
    return report
