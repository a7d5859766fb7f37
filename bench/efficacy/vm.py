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
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from bench.efficacy.scenarios import DATA_FILE_MIB, DATA_FILES
from tests.vm import harness

IMAGE_RECIPE_VERSION = 1
# Boot, daemon start-up (Python under TCG), cgroup set-up and clean-up per run.
VM_BOOT_SEC = 30.0
PER_RUN_OVERHEAD_SEC = 45.0
SCRATCH_IMAGE_MIB = 256


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
        image_size = len(DATA_FILES) * file_mib + 64 + (len(DATA_FILES) * file_mib) // 16
        partial = harness.make_ext4_image(scratch / "image.raw", image_size, files_dir=files)
        partial.replace(image)
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
) -> Dict[str, Any]:
    """Boot one VM that runs ``runs`` in order; returns the guest's report plus the VM's outcome."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = {"runs": list(runs), "policies": dict(policies), "scratch_drive": scratch_drive}
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    # Read-only: the cached image is shared by every VM, also by concurrent runs (a test beside a benchmark).
    drives: List[harness.Drive] = [harness.ReadOnlyDrive(ensure_data_image())]
    with contextlib.ExitStack() as stack:
        if scratch_drive:
            scratch_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="efficacy-scratch-")))
            drives.append(harness.make_ext4_image(scratch_dir / "scratch.raw", SCRATCH_IMAGE_MIB))
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
