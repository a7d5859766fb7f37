"""The benchmark's workload: the seed's failure as a small, honest program.

It runs as the only process of the benchmark's cgroup and does, in order:

1. optionally fills tmpfs files (shmem: counted in memory.stat ``file`` but not
   reclaimable without swap), all at once or, with ``--tmpfs-fill-sec``, a
   step at a time over that many seconds while the loop runs;
2. grows an anonymous heap, in steps spread over ``--anon-ramp-sec``, and then
   keeps it (every page written, so it is resident and, without swap, stays);
3. meanwhile and until ``--duration-sec`` is over, loops over ``--files``: maps
   each file, touches one byte of every page (which faults the whole page in
   from the block device), and unmaps it (``--access mmap``, the seed's loop);
   or reads it with plain read() into one reused buffer (``--access read``);
   optionally rewriting ``--dirty-mib`` of a file after each pass without
   fsync (dirty page cache that needs writeback before it can be dropped).

Progress goes to stdout as one JSON object per line, so the runner knows how
much was scanned even if the kernel OOM-kills this process halfway:
``{"t": <s since start>, "event": "scan", "mib": <total MiB scanned>,
"lat_ms": <ms the chunk took>}`` after every chunk (the chunk is the loop's
request: its latency excludes the pacing's idle time), plus ``anon``,
``tmpfs`` and ``pass`` events. Throughput is MiB of file data brought through
the page cache per second; touching one byte per page keeps the CPU cost per
MiB small, so what is measured is memory behaviour, not Python's speed.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, TextIO

PAGE = 4096
MIB = 1 << 20
# Progress is reported (and the anon ramp advanced) after every chunk of this size.
CHUNK_BYTES = 4 * MIB
ANON_STEP_MIB = 4
TMPFS_FILE_MIB = 32
TMPFS_STEP_MIB = 4
READ_BUFFER_BYTES = 1 * MIB


@dataclass(frozen=True)
class WorkloadConfig:
    files: Sequence[Path]
    access: str  # "mmap" | "read"
    anon_mib: int
    anon_ramp_sec: float
    tmpfs_dir: Optional[Path]
    tmpfs_mib: int
    dirty_file: Optional[Path]
    dirty_mib: int
    duration_sec: float
    # The demand: at most this many MiB scanned per second (0: as fast as it can), as a service
    # serves the requests it gets rather than all it could.
    pace_mib_s: float = 0.0
    # tmpfs written over this many seconds while the loop runs (0: all of it before the loop).
    tmpfs_fill_sec: float = 0.0


class Workload:
    def __init__(
        self,
        config: WorkloadConfig,
        out: TextIO,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.out = out
        self.clock = clock
        self.sleep = sleep
        self.started = clock()
        self.heap: List[bytearray] = []
        self.scanned_bytes = 0
        self.passes = 0
        self.tmpfs_written_mib = 0
        self.chunk_started = self.started

    def elapsed(self) -> float:
        return self.clock() - self.started

    def emit(self, event: str, **fields: object) -> None:
        self.out.write(json.dumps({"t": round(self.elapsed(), 3), "event": event, **fields}) + "\n")
        self.out.flush()

    def run(self) -> None:
        if self.config.tmpfs_fill_sec <= 0:
            self.fill_tmpfs()
        self.grow_anon()
        self.chunk_started = self.clock()
        while self.elapsed() < self.config.duration_sec:
            for path in self.config.files:
                if self.config.access == "mmap":
                    self.scan_mapped(path)
                else:
                    self.scan_read(path)
                if self.elapsed() >= self.config.duration_sec:
                    break
            self.passes += 1
            self.emit("pass", passes=self.passes, mib=self.scanned_bytes / MIB)
            self.write_dirty()
        self.emit("done", mib=self.scanned_bytes / MIB, passes=self.passes)

    # ---- memory that stays -------------------------------------------------------

    def fill_tmpfs(self, up_to_mib: Optional[int] = None) -> None:
        """Write tmpfs files up to ``up_to_mib`` (default: all of --tmpfs-mib)."""
        config = self.config
        if config.tmpfs_dir is None or config.tmpfs_mib <= 0:
            return
        target = config.tmpfs_mib if up_to_mib is None else min(config.tmpfs_mib, up_to_mib)
        block = b"\x02" * MIB
        # Several files: "tmpfs files", as a service's /dev/shm or a container's /tmp would hold.
        while self.tmpfs_written_mib < target:
            index, used = divmod(self.tmpfs_written_mib, TMPFS_FILE_MIB)
            size = min(TMPFS_FILE_MIB - used, target - self.tmpfs_written_mib)
            with open(config.tmpfs_dir / f"shm-{index}", "ab") as handle:
                for _ in range(size):
                    handle.write(block)
            self.tmpfs_written_mib += size
            self.emit("tmpfs", mib=self.tmpfs_written_mib)

    def grow_tmpfs(self) -> None:
        """The slow fill: tmpfs in step with the elapsed share of --tmpfs-fill-sec."""
        fill_sec = self.config.tmpfs_fill_sec
        if fill_sec <= 0 or self.tmpfs_written_mib >= self.config.tmpfs_mib:
            return
        share = min(1.0, self.elapsed() / fill_sec)
        wanted = int(self.config.tmpfs_mib * share)
        if wanted >= self.tmpfs_written_mib + TMPFS_STEP_MIB or share >= 1.0:
            self.fill_tmpfs(wanted)

    def grow_anon(self) -> None:
        """Advance the heap to where the ramp should be by now; after the ramp it stays."""
        config = self.config
        held = len(self.heap) * ANON_STEP_MIB
        if held >= config.anon_mib:
            return
        share = 1.0 if config.anon_ramp_sec <= 0 else min(1.0, self.elapsed() / config.anon_ramp_sec)
        wanted = min(config.anon_mib, int(config.anon_mib * share))
        grew = False
        while held + ANON_STEP_MIB <= wanted or (share >= 1.0 and held < config.anon_mib):
            # bytearray(b"\x01") * n writes every byte: resident, not a lazily zeroed mapping.
            self.heap.append(bytearray(b"\x01") * (ANON_STEP_MIB * MIB))
            held += ANON_STEP_MIB
            grew = True
        if grew:
            self.emit("anon", mib=held)

    # ---- the scan loop -----------------------------------------------------------

    def after_chunk(self, size: int) -> None:
        self.scanned_bytes += size
        latency_ms = (self.clock() - self.chunk_started) * 1000
        self.emit("scan", mib=round(self.scanned_bytes / MIB, 3), lat_ms=round(latency_ms, 2))
        self.grow_anon()
        self.grow_tmpfs()
        pace = self.config.pace_mib_s
        if pace > 0:
            # Ahead of the demand: idle (not stalled) until it catches up.
            ahead = self.scanned_bytes / (pace * MIB) - self.elapsed()
            if ahead > 0:
                self.sleep(ahead)
        self.chunk_started = self.clock()

    def scan_mapped(self, path: Path) -> None:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            mapping = mmap.mmap(handle.fileno(), size, prot=mmap.PROT_READ)
        try:
            for offset in range(0, size, CHUNK_BYTES):
                end = min(size, offset + CHUNK_BYTES)
                # A strided slice reads one byte per page in C: every page faults in.
                _ = mapping[offset:end:PAGE]
                self.after_chunk(end - offset)
                if self.elapsed() >= self.config.duration_sec:
                    break
        finally:
            mapping.close()

    def scan_read(self, path: Path) -> None:
        buffer = bytearray(READ_BUFFER_BYTES)
        since_report = 0
        with open(path, "rb", buffering=0) as handle:
            while True:
                got = handle.readinto(buffer)
                if not got:
                    break
                since_report += got
                if since_report >= CHUNK_BYTES:
                    self.after_chunk(since_report)
                    since_report = 0
                    if self.elapsed() >= self.config.duration_sec:
                        break
        if since_report:
            self.after_chunk(since_report)

    def write_dirty(self) -> None:
        config = self.config
        if config.dirty_file is None or config.dirty_mib <= 0:
            return
        block = bytes([self.passes % 251 + 1]) * MIB
        # No fsync: the pages stay dirty until the flusher writes them back.
        with open(config.dirty_file, "wb") as handle:
            for _ in range(config.dirty_mib):
                handle.write(block)
        self.emit("dirty", mib=config.dirty_mib)


def parse_args(argv: Optional[Sequence[str]] = None) -> WorkloadConfig:
    parser = argparse.ArgumentParser(
        prog="python -m bench.efficacy.workload", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--files", type=Path, nargs="+", required=True, help="files to scan, in a loop")
    parser.add_argument("--access", choices=("mmap", "read"), default="mmap")
    parser.add_argument("--anon-mib", type=int, default=0)
    parser.add_argument("--anon-ramp-sec", type=float, default=10.0)
    parser.add_argument("--tmpfs-dir", type=Path, default=None)
    parser.add_argument("--tmpfs-mib", type=int, default=0)
    parser.add_argument("--dirty-file", type=Path, default=None)
    parser.add_argument("--dirty-mib", type=int, default=0)
    parser.add_argument("--duration-sec", type=float, required=True)
    parser.add_argument("--pace-mib-s", type=float, default=0.0, help="demand in MiB/s (0: flat out)")
    parser.add_argument("--tmpfs-fill-sec", type=float, default=0.0, help="fill tmpfs over this long")
    parser.add_argument("--wait-start", action="store_true", help='print "ready", start at a line on stdin')
    args = parser.parse_args(argv)
    return WorkloadConfig(
        files=tuple(args.files),
        access=args.access,
        anon_mib=args.anon_mib,
        anon_ramp_sec=args.anon_ramp_sec,
        tmpfs_dir=args.tmpfs_dir,
        tmpfs_mib=args.tmpfs_mib,
        dirty_file=args.dirty_file,
        dirty_mib=args.dirty_mib,
        duration_sec=args.duration_sec,
        pace_mib_s=args.pace_mib_s,
        tmpfs_fill_sec=args.tmpfs_fill_sec,
    )


def wait_for_start(out: TextIO, start: TextIO) -> None:
    """Say "ready" (imports done) and wait for the runner's go: its window opens then."""
    out.write(json.dumps({"event": "ready"}) + "\n")
    out.flush()
    start.readline()


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    config = parse_args(arguments)
    if "--wait-start" in arguments:
        wait_for_start(sys.stdout, sys.stdin)
    Workload(config, sys.stdout).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
