"""Run in the VM by run.sh: wait until remediator clamps the victim's memory.high, then freeze the victim.

With the readers still running, the clamp throttles them, the stall rate rises, and the daemon rightly
backs off (restores memory.high) at the rung's verify time (verify_sec 4 in vm-victim.yaml), so the package
removal afterwards would find no clamp to restore. A frozen cgroup stalls no more, so the clamp stays until
the daemon is stopped. (Until the back-off was judged over the whole verify period, a trigger event
milliseconds after the write made the daemon back off before this script could freeze the cgroup: CI
failed on it.)

Usage: python3 freeze_on_clamp.py CGROUP_DIR TIMEOUT_SEC; exit 0 once frozen with a clamp, 1 on timeout.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(cgroup: Path, timeout_sec: float) -> int:
    deadline = time.monotonic() + timeout_sec
    high = cgroup / "memory.high"
    while time.monotonic() < deadline:
        if high.read_text().strip() != "max":
            (cgroup / "cgroup.freeze").write_text("1")
            return 0
        time.sleep(0.01)
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), float(sys.argv[2])))
