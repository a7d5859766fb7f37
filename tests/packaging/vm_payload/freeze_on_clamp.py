"""Run in the VM by run.sh: wait until remediator clamps the victim's memory.high, then freeze the victim.

The freeze must follow the clamp within milliseconds. With the readers still running, the clamp throttles
them, the stall rate rises, and the daemon rightly backs off (restores memory.high) within a second
(measured under TCG), so the package removal afterwards would find no clamp to restore. A frozen cgroup
stalls no more, so the clamp stays until the daemon is stopped.

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
