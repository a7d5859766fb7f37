"""The baseline: a minimal 1 s polling loop over the watched cgroups' memory.pressure files.

This is what systemd-oomd and oomd do (read every monitored cgroup's pressure
once per interval; systemd-oomd then wants 30 s above 60 % before acting), cut
down to the same job remediator's trigger does: notice a cgroup whose ``full``
stall over the last interval reached the same share of time as the policy's
``stall/window`` (100 ms per 2 s = 5 %). It re-lists the parent directory of
each watched glob every tick (oomd resolves its cgroup patterns every
interval), so a new cgroup is picked up within one interval.

With ``--react CGROUP`` it also does remediator's action when it notices
pressure there: memory.high = ``--react-high`` bytes, once (while memory.high
is ``max``), so reaction times compare like with like.

Output: one JSON object per line on stdout (``ready``, ``watch``, ``detected``);
times are time.monotonic() seconds (CLOCK_MONOTONIC, shared with the bench).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


def _emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def full_total_us(text: str) -> Optional[int]:
    """The ``total`` of the ``full`` line of a PSI file (None when there is none)."""
    for line in text.splitlines():
        if line.startswith("full "):
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "total":
                    return int(value)
    return None


def _split_glob(pattern: str) -> Tuple[str, str]:
    parent, _, leaf = pattern.rpartition("/")
    return parent, leaf


class Poller:
    def __init__(
        self, cgroup_root: Path, globs: Sequence[str], share: float, react: Optional[str], react_high: int
    ) -> None:
        self.root = cgroup_root
        self.globs = [_split_glob(g) for g in globs]
        self.share = share
        self.react = react
        self.react_high = react_high
        self.last_total: Dict[str, int] = {}
        self.last_at: Dict[str, float] = {}

    def list_watched(self) -> List[str]:
        names: List[str] = []
        for parent, leaf in self.globs:
            try:
                with os.scandir(self.root / parent) as entries:
                    names.extend(
                        f"{parent}/{e.name}"
                        for e in entries
                        if e.is_dir(follow_symlinks=False) and fnmatch.fnmatchcase(e.name, leaf)
                    )
            except FileNotFoundError:
                continue
        return names

    def tick(self) -> None:
        for name in self.list_watched():
            try:
                with open(self.root / name / "memory.pressure", "rb") as f:
                    text = f.read().decode("ascii")
            except OSError:
                self.last_total.pop(name, None)
                continue
            now = time.monotonic()
            total = full_total_us(text)
            if total is None:
                continue
            previous = self.last_total.get(name)
            if previous is None:
                _emit("watch", cgroup=name, t=now)
            elif name == self.react:
                interval = now - self.last_at[name]
                if interval > 0 and (total - previous) / (interval * 1e6) >= self.share:
                    self.act(name, now, total - previous)
            self.last_total[name] = total
            self.last_at[name] = now

    def act(self, name: str, detected_at: float, delta_us: int) -> None:
        high = self.root / name / "memory.high"
        if high.read_text().strip() != "max":
            return  # already acted on this episode
        high.write_text(str(self.react_high))
        _emit("detected", cgroup=name, t=detected_at, written=time.monotonic(), delta_us=delta_us)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cgroup-root", type=Path, default=Path("/sys/fs/cgroup"))
    parser.add_argument("--glob", action="append", required=True, help="parent/leaf-glob, e.g. bench/w*")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--share", type=float, default=0.05, help="full stall share that counts as pressure")
    parser.add_argument("--react", default=None)
    parser.add_argument("--react-high", type=int, default=0)
    args = parser.parse_args(argv)
    stopping = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    poller = Poller(args.cgroup_root, args.glob, args.share, args.react, args.react_high)
    first = True
    next_tick = time.monotonic()
    while not stopping:
        poller.tick()
        if first:
            _emit("ready", t=time.monotonic(), watched=len(poller.last_total))
            first = False
        next_tick += args.interval
        # A tick that overran does not make the next ones come faster.
        next_tick = max(next_tick, time.monotonic())
        time.sleep(max(0.0, next_tick - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
