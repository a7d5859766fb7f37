"""The matrix's workloads that are real tools (issue 13): fio, PostgreSQL with pgbench, and a tar.

Each runs as ``python -m bench.efficacy.tools KIND ...`` as the first process of
its cgroup (every child it starts is charged there too) and speaks the same
protocol as ``workload.py``: one JSON object per line on stdout, ``anon`` events
while its heap grows, ``scan`` events with the cumulative work done (``mib``: MiB
for fio and tar, transactions for pgbench: the scenario's unit), and at the end one
``result`` event with what the tool itself reported (throughput, latency p50/p99).

The heap is the seed's shape: anonymous memory that stays, next to the tool's page
cache. The tool is timed to end before the runner's window does (``--duration-sec``
is the window), so its own summary arrives; the runner waits for it.

The parsers (fio's JSON, pgbench's per-transaction log and progress lines) are
pure functions, unit-tested in ``tests/test_efficacy_tools.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

MIB = 1 << 20
ANON_STEP_MIB = 4
# fio and pgbench print a status line every second; the tool ends this long before the window
# so its summary is written while the runner still waits (under TCG fio needs ~1 s to wind up).
END_MARGIN_SEC = 2.0
FIO_BLOCK = "128k"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_READY_TIMEOUT_SEC = 60.0
TAR_CHUNK_BYTES = 4 * MIB


class Emitter:
    """Thread-safe JSON lines on stdout, timed from the tool's start."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def emit(self, event: str, **fields: object) -> None:
        line = json.dumps({"t": round(self.elapsed(), 3), "event": event, **fields}) + "\n"
        with self.lock:
            self.out.write(line)
            self.out.flush()


class AnonHeap(threading.Thread):
    """Anonymous memory grown in steps over ``ramp_sec``, then kept (every page written)."""

    def __init__(self, emitter: Emitter, mib: int, ramp_sec: float) -> None:
        super().__init__(daemon=True)
        self.emitter = emitter
        self.mib = mib
        self.ramp_sec = ramp_sec
        self.heap: List[bytearray] = []

    def run(self) -> None:
        held = 0
        while held < self.mib:
            share = 1.0 if self.ramp_sec <= 0 else min(1.0, self.emitter.elapsed() / self.ramp_sec)
            wanted = self.mib if share >= 1.0 else int(self.mib * share)
            grew = False
            while held + ANON_STEP_MIB <= wanted or (share >= 1.0 and held < self.mib):
                self.heap.append(bytearray(b"\x01") * (ANON_STEP_MIB * MIB))
                held += ANON_STEP_MIB
                grew = True
            if grew:
                self.emitter.emit("anon", mib=held)
            time.sleep(0.2)


# ---- fio -----------------------------------------------------------------------------------


def fio_argv(
    mode: str, files: Sequence[Path], runtime_sec: int, rate_mib_s: float, size_mib: int
) -> List[str]:
    """fio streaming ``files`` (read) or writing ``files[0]`` (buffered write), time-based."""
    argv = [
        "fio",
        f"--name={mode}",
        "--ioengine=psync",
        f"--bs={FIO_BLOCK}",
        "--time_based",
        f"--runtime={runtime_sec}",
        "--output-format=json",
        "--status-interval=1",
        "--filename=" + ":".join(str(path).replace(":", "\\:") for path in files),
    ]
    if mode == "read":
        # One file after the other (not round-robin per block): a stream, as a backup reader does.
        argv += ["--rw=read", "--readonly", "--file_service_type=sequential"]
    else:
        # Buffered: no fsync, no O_DIRECT: the pages stay dirty until the flusher writes them.
        argv += ["--rw=write", f"--size={size_mib}m", "--end_fsync=0", "--fallocate=none"]
    if rate_mib_s > 0:
        argv.append(f"--rate={int(rate_mib_s)}m")
    return argv


def json_documents(text: str) -> Tuple[List[Dict[str, Any]], str]:
    """The complete JSON objects at the start of ``text`` (fio prints one per status interval),
    and the incomplete rest."""
    decoder = json.JSONDecoder()
    documents: List[Dict[str, Any]] = []
    position = 0
    while True:
        start = text.find("{", position)
        if start < 0:
            return documents, ""
        try:
            document, end = decoder.raw_decode(text, start)
        except ValueError:
            return documents, text[start:]
        if isinstance(document, dict):
            documents.append(document)
        position = end


def fio_figures(document: Mapping[str, Any], mode: str) -> Dict[str, Any]:
    """MiB done, MiB/s and completion latency p50/p99 (ms) of the job, from fio's JSON."""
    job = document["jobs"][0]
    side = job["read" if mode == "read" else "write"]
    percentiles = side.get("clat_ns", {}).get("percentile", {}) or {}
    runtime_ms = float(side.get("runtime", 0) or job.get("job_runtime", 0) or 0)
    mib = float(side.get("io_bytes", 0)) / MIB

    def ms(key: str) -> Optional[float]:
        value = percentiles.get(key)
        return None if value is None else round(float(value) / 1e6, 3)

    return {
        "mib": round(mib, 3),
        "throughput": round(mib / (runtime_ms / 1000), 3) if runtime_ms > 0 else 0.0,
        "lat_p50_ms": ms("50.000000"),
        "lat_p99_ms": ms("99.000000"),
        "ios": int(side.get("total_ios", 0)),
    }


def run_fio(arguments: argparse.Namespace, emitter: Emitter) -> int:
    runtime = max(1, int(arguments.duration_sec - emitter.elapsed() - END_MARGIN_SEC))
    argv = fio_argv(arguments.mode, arguments.files, runtime, arguments.rate_mib_s, arguments.size_mib)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    pending = ""
    last: Optional[Dict[str, Any]] = None
    for line in process.stdout:
        documents, pending = json_documents(pending + line)
        for document in documents:
            last = document
            figures = fio_figures(document, arguments.mode)
            emitter.emit("scan", mib=figures["mib"])
    code = process.wait()
    if last is not None:
        emitter.emit("result", tool="fio", unit="MiB/s", **fio_figures(last, arguments.mode))
    return code


# ---- PostgreSQL and pgbench ------------------------------------------------------------------

PGBENCH_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
PGBENCH_PROGRESS = re.compile(r"^progress: ([0-9.]+) s, ([0-9.]+) tps")


def pgbench_log_latencies_ms(lines: Iterator[str]) -> List[float]:
    """Per-transaction latencies from pgbench's -l log: ``client tx_no latency_us script epoch us``."""
    out: List[float] = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2].isdigit():
            out.append(int(fields[2]) / 1000.0)
    return out


def percentile(values: Sequence[float], share: float) -> Optional[float]:
    """The nearest-rank percentile (share in 0..1) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-share * len(ordered) // 1))))
    return ordered[rank - 1]


def _run_as_postgres(argv: Sequence[str], **popen: Any) -> subprocess.Popen[str]:
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.Popen([*runner, *argv], text=True, **popen)


def _pg_ready(socket_dir: Path) -> bool:
    completed = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-q", "-h", str(socket_dir), "-U", "postgres"], check=False
    )
    return completed.returncode == 0


def prewarm(data_dir: Path) -> int:
    """Read the database's files once, as a server that has run for a while has: the page cache
    is then at the limit when the window opens, and every miss of the random selects needs
    reclaim (measured without it: 15 s of pgbench -S under TCG touched ~60 MiB, and the cgroup
    never came near memory.max)."""
    done = 0
    buffer = bytearray(1 << 20)
    for path in sorted((data_dir / "base").rglob("*")):
        if not path.is_file():
            continue
        with open(path, "rb", buffering=0) as handle:
            while True:
                got = handle.readinto(buffer)
                if not got:
                    break
                done += got
    return done


def start_postgres(arguments: argparse.Namespace) -> Tuple[subprocess.Popen[str], IO[str]]:
    """The server in this cgroup, on a Unix socket, ready to serve; its data read once."""
    socket_dir: Path = arguments.socket_dir
    log_dir: Path = arguments.log_dir
    for directory in (socket_dir, log_dir):
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(directory, user="postgres")
    server_log = open(log_dir / "server.log", "w")  # noqa: SIM115 (closed with the server, below)
    server = _run_as_postgres(
        [
            str(PG_BIN / "postgres"),
            "-D",
            str(arguments.data_dir),
            "-c",
            "listen_addresses=",
            "-c",
            f"unix_socket_directories={socket_dir}",
            "-c",
            # Small: shared_buffers is shmem (not reclaimable without swap); the data set is
            # meant to be read through the page cache, where the scenario's pressure is.
            f"shared_buffers={arguments.shared_buffers_mib}MB",
            # The light VM has no /dev/shm: dynamic shared memory in files of the data directory,
            # and no parallel workers (which would be its only user in a select-only load).
            "-c",
            "dynamic_shared_memory_type=mmap",
            "-c",
            "max_parallel_workers_per_gather=0",
        ],
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + PG_READY_TIMEOUT_SEC
    while not _pg_ready(socket_dir):
        if server.poll() is not None or time.monotonic() > deadline:
            server_log.flush()
            tail = (log_dir / "server.log").read_text(errors="replace")[-2000:]
            stop_postgres(server, server_log)
            raise RuntimeError(f"postgres did not start (status {server.poll()}):\n{tail}")
        time.sleep(0.25)
    prewarm(arguments.data_dir)
    return server, server_log


def stop_postgres(server: subprocess.Popen[str], server_log: IO[str]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)  # fast shutdown
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    server_log.close()


def run_pgbench(
    arguments: argparse.Namespace, emitter: Emitter, server: subprocess.Popen[str], server_log: IO[str]
) -> int:
    socket_dir: Path = arguments.socket_dir
    log_dir: Path = arguments.log_dir
    try:
        runtime = max(2, int(arguments.duration_sec - emitter.elapsed() - END_MARGIN_SEC))
        client = _run_as_postgres(
            [
                str(PG_BIN / "pgbench"),
                "-h",
                str(socket_dir),
                "-U",
                "postgres",
                "-n",  # no vacuum before the run: the data set is as built
                "-S",  # select-only: the data set's pages, read through the page cache
                "-c",
                str(arguments.clients),
                "-j",
                str(arguments.clients),
                "-T",
                str(runtime),
                "-P",
                "1",
                "-l",
                f"--log-prefix={log_dir}/tx",
                "postgres",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(log_dir),
        )
        assert client.stdout is not None
        transactions = 0.0
        report: List[str] = []
        for line in client.stdout:
            match = PGBENCH_PROGRESS.match(line)
            if match:
                # -P 1: tps over the last second; summed, the transactions done so far.
                transactions += float(match.group(2))
                emitter.emit("scan", mib=round(transactions, 1))
            else:
                report.append(line)
        code = client.wait()
        latencies: List[float] = []
        for path in sorted(log_dir.glob("tx*")):
            with open(path) as handle:
                latencies += pgbench_log_latencies_ms(handle)
        tps_match = PGBENCH_TPS.search("".join(report))
        emitter.emit(
            "result",
            tool="pgbench",
            unit="tps",
            mib=len(latencies),
            throughput=float(tps_match.group(1)) if tps_match else round(len(latencies) / runtime, 2),
            lat_p50_ms=percentile(latencies, 0.5),
            lat_p99_ms=percentile(latencies, 0.99),
            transactions=len(latencies),
            pgbench_status=code,
        )
        return code
    finally:
        stop_postgres(server, server_log)


# ---- the batch job: tar of a tree ----------------------------------------------------------


def run_tar(arguments: argparse.Namespace, emitter: Emitter) -> int:
    """tar the tree again and again until the window ends; the archive goes through a pipe
    (to /dev/null, GNU tar would skip reading the files), counted here."""
    done = 0
    passes = 0
    while emitter.elapsed() < arguments.duration_sec:
        process = subprocess.Popen(
            ["tar", "-cf", "-", "-C", str(arguments.tree), "."], stdout=subprocess.PIPE
        )
        stream: IO[bytes] = process.stdout  # type: ignore[assignment]
        since = 0
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            done += len(chunk)
            since += len(chunk)
            if since >= TAR_CHUNK_BYTES:
                emitter.emit("scan", mib=round(done / MIB, 3))
                since = 0
        if process.wait() != 0:
            return 1
        passes += 1
        emitter.emit("pass", passes=passes, mib=round(done / MIB, 3))
    return 0


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.efficacy.tools", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--anon-mib", type=int, default=0)
    parser.add_argument("--anon-ramp-sec", type=float, default=0.0)
    parser.add_argument("--duration-sec", type=float, required=True, help="the runner's window")
    parser.add_argument("--wait-start", action="store_true", help='print "ready", start at a line on stdin')
    tools = parser.add_subparsers(dest="tool", required=True)
    fio = tools.add_parser("fio")
    fio.add_argument("--mode", choices=("read", "write"), required=True)
    fio.add_argument("--files", type=Path, nargs="+", required=True)
    fio.add_argument("--rate-mib-s", type=float, default=0.0)
    fio.add_argument("--size-mib", type=int, default=384)
    pg = tools.add_parser("pgbench")
    pg.add_argument("--data-dir", type=Path, required=True)
    pg.add_argument("--socket-dir", type=Path, required=True)
    pg.add_argument("--log-dir", type=Path, required=True)
    pg.add_argument("--clients", type=int, default=2)
    pg.add_argument("--shared-buffers-mib", type=int, default=16)
    tar = tools.add_parser("tar")
    tar.add_argument("--tree", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = parse_args(argv)
    # The server starts (and its data is read once) before the window: a database is a
    # service that was running when the load came.
    server = start_postgres(arguments) if arguments.tool == "pgbench" else None
    if arguments.wait_start:
        from bench.efficacy.workload import wait_for_start

        wait_for_start(sys.stdout, sys.stdin)
    emitter = Emitter(sys.stdout)
    if arguments.anon_mib > 0:
        AnonHeap(emitter, arguments.anon_mib, arguments.anon_ramp_sec).start()
    if arguments.tool == "fio":
        code = run_fio(arguments, emitter)
    elif arguments.tool == "pgbench":
        assert server is not None
        code = run_pgbench(arguments, emitter, *server)
    else:
        code = run_tar(arguments, emitter)
    emitter.emit("done", status=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
