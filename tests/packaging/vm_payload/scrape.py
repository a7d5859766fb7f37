"""Run in the VM by run.sh: scrape node_exporter until the page matches a pattern, keep the page.

The VM has no curl; python3 is in the image. node_exporter (Debian's prometheus-node-exporter) serves
the files of its textfile directory, remediator.prom among them, on http://127.0.0.1:9100/metrics.

Usage: python3 scrape.py OUT_FILE TIMEOUT_SEC [REGEX...]; exit 0 once a page was read on which every
REGEX matches a line, 1 on timeout (OUT_FILE then holds the last page read, if any). Several patterns
make one page hold them all at once: a series that exists only while a cgroup is under action must be
on the same page as the counters, not on one read before or after it.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import List

URL = "http://127.0.0.1:9100/metrics"


def main(out: Path, timeout_sec: float, patterns: List[str]) -> int:
    deadline = time.monotonic() + timeout_sec
    wanted = [re.compile(pattern, re.MULTILINE) for pattern in patterns]
    while True:
        try:
            with urllib.request.urlopen(URL, timeout=10) as response:
                page = response.read().decode()
        except OSError as exc:
            print(f"scrape: {exc}", file=sys.stderr)
        else:
            out.write_text(page)
            if all(pattern.search(page) for pattern in wanted):
                return 0
        if time.monotonic() >= deadline:
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]))
