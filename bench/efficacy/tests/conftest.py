"""The benchmark's own unit tests (no VM, no root): .venv/bin/pytest bench/efficacy/tests

pytest's rootdir-relative import puts only this folder on sys.path (bench/ is
not a package), so the repository root is added for ``import bench.efficacy``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[3])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
