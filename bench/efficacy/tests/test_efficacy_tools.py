"""The matrix's tool wrappers and the Senpai peer: parsers and checks, on hand-made input."""

from __future__ import annotations

import json
from pathlib import Path

from bench.efficacy.peers import SENPAI_SHA256, adjustments, senpai_status, sha256_of
from bench.efficacy.tools import (
    fio_argv,
    fio_figures,
    json_documents,
    percentile,
    pgbench_log_latencies_ms,
)

MIB = 1 << 20


def fio_document(io_mib: float, runtime_ms: int, p50_ns: int, p99_ns: int, side: str = "read") -> dict:  # type: ignore[type-arg]
    return {
        "jobs": [
            {
                side: {
                    "io_bytes": int(io_mib * MIB),
                    "runtime": runtime_ms,
                    "total_ios": int(io_mib * 8),
                    "clat_ns": {"percentile": {"50.000000": p50_ns, "99.000000": p99_ns}},
                }
            }
        ]
    }


def test_fio_status_stream_is_split_into_its_documents_and_an_unfinished_rest() -> None:
    first = json.dumps(fio_document(32, 1000, 1_000_000, 9_000_000), indent=1)
    second = json.dumps(fio_document(64, 2000, 1_000_000, 9_000_000), indent=1)

    documents, rest = json_documents(first + "\n" + second[: len(second) // 2])

    assert len(documents) == 1 and documents[0]["jobs"][0]["read"]["runtime"] == 1000
    documents, rest = json_documents(rest + second[len(second) // 2 :])
    assert len(documents) == 1 and documents[0]["jobs"][0]["read"]["runtime"] == 2000
    assert rest == ""


def test_fio_figures_are_mib_throughput_and_latency_percentiles_in_ms() -> None:
    figures = fio_figures(fio_document(96, 3000, 1_500_000, 64_000_000, side="write"), "write")

    assert figures["mib"] == 96.0
    assert figures["throughput"] == 32.0
    assert figures["lat_p50_ms"] == 1.5 and figures["lat_p99_ms"] == 64.0


def test_fio_reads_files_one_after_the_other_and_writes_buffered_at_the_demand() -> None:
    read = fio_argv("read", [Path("/d/a"), Path("/d/b")], 17, 32.0, 384)
    write = fio_argv("write", [Path("/s/w")], 17, 32.0, 384)

    assert "--filename=/d/a:/d/b" in read and "--file_service_type=sequential" in read
    assert "--readonly" in read and "--rate=32m" in read and "--runtime=17" in read
    assert "--rw=write" in write and "--size=384m" in write and "--end_fsync=0" in write
    assert not any(option.startswith("--direct") for option in write)


def test_pgbench_log_gives_each_transaction_latency_in_ms() -> None:
    log = ["0 1 1500 0 1733400000 100", "1 1 250000 0 1733400000 200", "garbage", ""]

    assert pgbench_log_latencies_ms(iter(log)) == [1.5, 250.0]


def test_percentile_is_a_measured_value_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_senpai_series_is_skipped_with_the_reason_when_the_file_is_absent(tmp_path: Path) -> None:
    status = senpai_status(tmp_path)

    assert not status.usable
    assert "absent" in status.reason and "skipped" in status.reason


def test_senpai_series_is_skipped_when_the_file_is_not_the_pinned_one(tmp_path: Path) -> None:
    (tmp_path / "senpai.py").write_text("print('not senpai')\n")

    status = senpai_status(tmp_path)

    assert not status.usable
    assert SENPAI_SHA256 in status.reason and sha256_of(tmp_path / "senpai.py") in status.reason


def test_senpai_runs_when_its_hash_is_the_expected_one(tmp_path: Path) -> None:
    (tmp_path / "senpai.py").write_text("pinned\n")

    status = senpai_status(tmp_path, expected_sha256=sha256_of(tmp_path / "senpai.py"))

    assert status.usable


def test_senpai_adjustments_are_read_from_its_log() -> None:
    log = [
        "2026-12-05 15:00:00 Configuration:",
        "2026-12-05 15:00:01 limit=100.00M pressure=0.000000 time_to_probe= 5 total=0 delta=0 integral=0",
        "2026-12-05 15:00:01   adjust: -0.01",
        "2026-12-05 15:00:02   adjust: 1.0",
    ]

    assert adjustments(log) == [-0.01, 1.0]
