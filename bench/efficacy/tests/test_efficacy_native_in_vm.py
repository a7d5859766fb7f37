"""--native on a real cgroup v2 host (the test VM): it runs, and SIGTERM mid-run leaves nothing behind.

Boots one light VM (tests/vm/harness.py), so it is marked ``vm``:
``.venv/bin/pytest bench/efficacy/tests -m vm``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

PYTHON = shlex.quote(sys.executable)

# Start a long remediator run, wait until the daemon watches the benchmark's cgroup, SIGTERM the
# benchmark, then list what is left: cgroups, mounts, daemon processes.
GUEST = f"""
mkdir -p /run/nt && mount -t ext4 /dev/vdb /run/nt || exit 3
{PYTHON} -m bench.efficacy --native --scenarios tmpfs-heavy --series remediator --repeats 1 --duration 300 \\
    --data-dir /run/nt/data --out /out/native > /out/native.log 2>&1 &
BENCH=$!
for _ in $(seq 1 240); do
    [ -e /sys/fs/cgroup/remediator-bench/bench.service ] && pgrep -f "remediator --config" >/dev/null && break
    sleep 0.5
done
pgrep -f "remediator --config" >/dev/null && echo daemon-was-running > /out/seen
sleep 5
kill -TERM $BENCH
wait $BENCH
echo $? > /out/status
ls -d /sys/fs/cgroup/remediator-bench* > /out/left-cgroups 2>/dev/null
grep remediator-bench /proc/mounts > /out/left-mounts
pgrep -f "remediator --config" > /out/left-daemons
exit 0
"""


def test_native_benchmark_cleans_up_its_cgroup_tmpfs_and_daemon_when_terminated(tmp_path: Path) -> None:
    from tests.vm import harness

    try:
        vm = harness.LightVm(harness.ensure_light())
    except harness.VmUnavailable as exc:
        pytest.skip(f"VM unavailable: {exc.reason}")
    disk = harness.make_ext4_image(tmp_path / "disk.raw", 1024)
    out = tmp_path / "out"

    result = vm.boot(GUEST, timeout_sec=600, drives=[disk], out_dir=out)

    assert result.exit_code == 0, result.describe()
    assert (out / "seen").read_text().strip() == "daemon-was-running", (out / "native.log").read_text()
    assert (out / "status").read_text().strip() == "130"
    assert "cleaned up" in (out / "native.log").read_text()
    assert (out / "left-cgroups").read_text() == ""
    assert (out / "left-mounts").read_text() == ""
    assert (out / "left-daemons").read_text() == ""
