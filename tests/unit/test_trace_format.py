"""The trace format remediator.trace/v1: what is written reads back as the same snapshots, compactly,
and a damaged file gives a located error or (cut by a crash) everything up to the cut."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.readings import (
    CgroupSnapshot,
    MemoryEvents,
    MemoryStat,
    NodeSnapshot,
    Pressure,
    PressureLine,
)
from remediator.trace.format import (
    SCHEMA,
    STAT_KEYS,
    CgroupRemoved,
    CgroupSample,
    EndReason,
    NodeSample,
    NodeWatchMode,
    PolicyDigest,
    TraceCapabilities,
    TraceEnd,
    TraceError,
    TraceHeader,
    TraceItem,
    TraceSource,
    TriggerFired,
    TruncationReason,
    record_time,
)
from remediator.trace.reader import TraceReader, open_trace, read_trace
from remediator.trace.writer import TraceWriter

START = 5000.25

HEADER = TraceHeader(
    node="node-1",
    kernel_release="6.1.0-18-amd64",
    capabilities=TraceCapabilities(
        memory_reclaim=True,
        watch_mode=NodeWatchMode.TRIGGERS,
        triggers_accepted=True,
        short_window_triggers=False,
        summary=("Kernel 6.1.0-18-amd64.", "PSI triggers work."),
    ),
    policies=(PolicyDigest("services-cache.yaml", "ab" * 32),),
    start_wall=1_764_944_000.5,
    start_monotonic=START,
    source=TraceSource.RECORD,
    interval_sec=1.0,
    remediator_version="0.1.0",
)

QUIET = Pressure(PressureLine(0.0, 0.0, 0.0, 0), PressureLine(0.0, 0.0, 0.0, 0))


def cgroup_snapshot(name: str = "system.slice/seed.service", **changes: Any) -> CgroupSnapshot:
    snap = CgroupSnapshot(
        cgroup=name,
        current_bytes=4 << 30,
        max_bytes=4 << 30,
        high_bytes=None,
        min_bytes=0,
        low_bytes=0,
        swap_max_bytes=None,
        stat=MemoryStat({"anon": 1 << 30, "file": 2 << 30, "active_file": 1 << 30, "pgfault": 123}),
        events=MemoryEvents(max=12, oom=1, oom_kill=1),
        pressure=Pressure(
            PressureLine(78.2, 41.11, 12.02, 183742991), PressureLine(23.9, 11.03, 3.01, 45112887)
        ),
        events_local=MemoryEvents(max=12),
    )
    return replace(snap, **changes)


def node_snapshot(**changes: Any) -> NodeSnapshot:
    snap = NodeSnapshot(
        pressure=QUIET,
        mem_total_bytes=16 << 30,
        mem_available_bytes=8 << 30,
        swap_total_bytes=0,
        swap_free_bytes=0,
        slab_reclaimable_bytes=200 << 20,
        vfs_cache_pressure=100,
    )
    return replace(snap, **changes)


def recorded(snapshot: CgroupSnapshot) -> CgroupSnapshot:
    """What a trace keeps of a snapshot: memory.stat reduced to STAT_KEYS."""
    kept = {k: v for k, v in snapshot.stat.values.items() if k in STAT_KEYS}
    return replace(snapshot, stat=MemoryStat(kept))


class KeptBuffer(io.BytesIO):
    """A buffer that keeps its bytes when the writer closes it."""

    def close(self) -> None:
        pass


def new_writer(compressed: bool) -> Tuple[TraceWriter, KeptBuffer]:
    buffer = KeptBuffer()
    if compressed:
        return TraceWriter(gzip.GzipFile(mode="wb", fileobj=buffer), HEADER, raw=buffer), buffer  # type: ignore[arg-type]
    return TraceWriter(buffer, HEADER), buffer


def read_bytes(data: bytes) -> Tuple[TraceHeader, List[TraceItem], TraceReader]:
    reader = TraceReader(io.BytesIO(data), "mem.trace")
    items = list(reader)
    return reader.header, items, reader


def lines_of(data: bytes) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


# ----- the round trip


Op = Union[
    Tuple[str, int, CgroupSnapshot],
    Tuple[str, int, NodeSnapshot],
    Tuple[str, int, str],
    Tuple[str, int, Optional[str], Optional[str]],
]

NAMES = ("a", "a/b", "system.slice/seed.service", "odd\udcff.scope")
few_ints = st.sampled_from([0, 4096, 1 << 30, 2**64 - 1])
avgs = st.sampled_from([0.0, 1.5, 23.9, 78.2, 100.0])
pressure_lines = st.builds(PressureLine, avgs, avgs, avgs, few_ints)
pressures = st.builds(Pressure, pressure_lines, st.none() | pressure_lines)
stats = st.dictionaries(st.sampled_from((*STAT_KEYS[:6], "kernel", "pgscan", "pgfault", "zswap")), few_ints)
events = st.builds(
    MemoryEvents,
    low=few_ints,
    high=st.sampled_from([0, 3]),
    max=st.sampled_from([0, 12]),
    oom=st.just(0),
    oom_kill=st.sampled_from([0, 1]),
    oom_group_kill=st.just(0),
    other=st.dictionaries(st.sampled_from(["sock_throttled", "new_counter"]), few_ints, max_size=2),
)
limits = st.none() | few_ints


@st.composite
def cgroup_snapshots(draw: st.DrawFn) -> CgroupSnapshot:
    return CgroupSnapshot(
        cgroup=draw(st.sampled_from(NAMES)),
        current_bytes=draw(few_ints),
        max_bytes=draw(limits),
        high_bytes=draw(limits),
        min_bytes=draw(few_ints),
        low_bytes=draw(few_ints),
        swap_max_bytes=draw(limits),
        stat=MemoryStat(draw(stats)),
        events=draw(events),
        pressure=draw(pressures),
        events_local=draw(st.none() | events),
    )


node_snapshots = st.builds(
    NodeSnapshot,
    pressure=pressures,
    mem_total_bytes=few_ints,
    mem_available_bytes=few_ints,
    swap_total_bytes=few_ints,
    swap_free_bytes=few_ints,
    slab_reclaimable_bytes=few_ints,
    vfs_cache_pressure=st.none() | st.sampled_from([0, 100, 500]),
)
steps = st.integers(0, 3_000_000)  # microseconds between two records
ops = st.lists(
    st.one_of(
        st.tuples(st.just("cgroup"), steps, cgroup_snapshots()),
        st.tuples(st.just("cgroup"), steps, cgroup_snapshots()),
        st.tuples(st.just("node"), steps, node_snapshots),
        st.tuples(st.just("gone"), steps, st.sampled_from(NAMES)),
        st.tuples(
            st.just("trigger"),
            steps,
            st.none() | st.sampled_from(NAMES),
            st.none() | st.just("services-cache"),
        ),
    ),
    max_size=40,
)


def write_ops(operations: List[Any], compressed: bool, end: bool) -> Tuple[bytes, List[Any]]:
    """Write the operations; return the bytes and the items a reader must give back."""
    writer, buffer = new_writer(compressed)
    expected: List[Any] = []
    now_us = 0
    node: Optional[NodeSnapshot] = None
    for op in operations:
        now_us += op[1]
        now = START + now_us / 1e6
        t = record_time(now - START)
        if op[0] == "cgroup":
            writer.cgroup(now, op[2])
            expected.append(CgroupSample(t, recorded(op[2]), node, len(expected) + 2))
        elif op[0] == "node":
            writer.node(now, op[2])
            node = op[2]
            expected.append(NodeSample(t, op[2], len(expected) + 2))
        elif op[0] == "gone":
            if writer.gone(now, op[2]):
                expected.append(CgroupRemoved(t, op[2], len(expected) + 2))
        else:
            writer.trigger(now, op[2], op[3])
            expected.append(TriggerFired(t, op[2], op[3], len(expected) + 2))
    if end:
        writer.end(START + now_us / 1e6 + 1, EndReason.SIGNAL, "SIGTERM")
        expected.append(
            TraceEnd(record_time(now_us / 1e6 + 1), EndReason.SIGNAL, "SIGTERM", len(expected) + 2)
        )
    writer.close()
    return buffer.getvalue(), expected


@settings(max_examples=150, deadline=None)
@given(operations=ops, compressed=st.booleans(), end=st.booleans())
def test_what_is_written_reads_back_as_the_same_snapshots(
    operations: List[Any], compressed: bool, end: bool
) -> None:
    data, expected = write_ops(operations, compressed, end)
    header, items, reader = read_bytes(data)
    assert header == HEADER
    assert items == expected
    assert reader.truncation is None
    assert reader.compressed is compressed
    assert (reader.end is not None) is end


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=ops, compressed=st.booleans(), cut=st.floats(0, 1))
def test_a_trace_cut_anywhere_reads_as_a_prefix_or_says_it_has_no_header(
    operations: List[Any], compressed: bool, cut: float
) -> None:
    data, expected = write_ops(operations, compressed, end=True)
    size = int(len(data) * cut)
    try:
        _, items, reader = read_bytes(data[:size])
    except TraceError as exc:
        # Only a cut within the header leaves nothing to read.
        assert exc.line == 1
        assert "no header" in str(exc)
        return
    assert items == expected[: len(items)]
    if size < len(data) and (compressed or data[size - 1 : size] != b"\n"):
        assert reader.truncation is not None
        assert reader.truncation.line == len(items) + 2


@settings(max_examples=200, deadline=None)
@given(
    operations=ops,
    compressed=st.booleans(),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_a_corrupted_trace_raises_only_a_located_trace_error(
    operations: List[Any], compressed: bool, flips: List[Tuple[float, int]]
) -> None:
    data, _ = write_ops(operations, compressed, end=True)
    damaged = bytearray(data)
    for where, mask in flips:
        damaged[int(where * len(damaged))] ^= mask
    try:
        read_bytes(bytes(damaged))
    except TraceError as exc:
        assert exc.line >= 1
        assert str(exc).startswith(f"mem.trace:{exc.line}: ")


# ----- compactness: the delta rule


def test_an_unchanged_cgroup_is_written_as_its_name_and_time_only() -> None:
    writer, buffer = new_writer(compressed=False)
    writer.cgroup(START + 1, cgroup_snapshot())
    writer.cgroup(START + 2, cgroup_snapshot())
    writer.close()
    first, second = lines_of(buffer.getvalue())[1:]
    assert set(first) >= {
        "current",
        "max",
        "high",
        "min",
        "low",
        "swap_max",
        "some",
        "full",
        "stat",
        "events",
    }
    assert second == {"type": "cgroup", "t": 2.0, "cgroup": "system.slice/seed.service"}


def test_a_changed_value_writes_that_value_and_a_map_only_its_changed_keys() -> None:
    writer, buffer = new_writer(compressed=False)
    writer.cgroup(START, cgroup_snapshot())
    stat = {"anon": 1 << 30, "file": 3 << 30, "pgfault": 999}  # file changed, active_file removed
    writer.cgroup(START + 1, cgroup_snapshot(high_bytes=3 << 30, stat=MemoryStat(stat)))
    writer.cgroup(START + 2, cgroup_snapshot(high_bytes=None, stat=MemoryStat(stat), events_local=None))
    writer.close()
    data = buffer.getvalue()
    second, third = lines_of(data)[2:]
    assert second == {
        "type": "cgroup",
        "t": 1.0,
        "cgroup": "system.slice/seed.service",
        "high": 3 << 30,
        "stat": {"file": 3 << 30, "active_file": None},
    }
    assert third == {
        "type": "cgroup",
        "t": 2.0,
        "cgroup": "system.slice/seed.service",
        "high": None,
        "events_local": None,
    }
    _, items, _ = read_bytes(data)
    assert isinstance(items[2], CgroupSample)
    assert items[2].snapshot == cgroup_snapshot(
        high_bytes=None, stat=MemoryStat({"anon": 1 << 30, "file": 3 << 30}), events_local=None
    )


def test_a_cgroup_that_reappears_after_gone_is_written_in_full_again() -> None:
    writer, buffer = new_writer(compressed=False)
    writer.cgroup(START, cgroup_snapshot())
    assert writer.gone(START + 1, "system.slice/seed.service")
    assert not writer.gone(START + 1, "system.slice/seed.service")  # nothing left to end
    writer.cgroup(START + 2, cgroup_snapshot())
    writer.close()
    lines = lines_of(buffer.getvalue())
    assert lines[2] == {"type": "gone", "t": 1.0, "cgroup": "system.slice/seed.service"}
    assert {k: v for k, v in lines[3].items() if k != "t"} == {k: v for k, v in lines[1].items() if k != "t"}


def test_memory_stat_keeps_only_the_documented_keys() -> None:
    writer, buffer = new_writer(compressed=False)
    writer.cgroup(START, cgroup_snapshot())
    writer.close()
    assert lines_of(buffer.getvalue())[1]["stat"] == {
        "anon": 1 << 30,
        "file": 2 << 30,
        "active_file": 1 << 30,
    }


def test_a_cgroup_sample_carries_the_latest_node_sample() -> None:
    writer, buffer = new_writer(compressed=False)
    writer.cgroup(START, cgroup_snapshot())
    writer.node(START + 1, node_snapshot())
    writer.node(START + 2, node_snapshot(mem_available_bytes=1 << 30))
    writer.cgroup(START + 2, cgroup_snapshot())
    writer.close()
    _, items, _ = read_bytes(buffer.getvalue())
    assert isinstance(items[0], CgroupSample) and items[0].node is None
    assert isinstance(items[3], CgroupSample)
    assert items[3].node == node_snapshot(mem_available_bytes=1 << 30)


def test_the_writer_refuses_time_running_backwards() -> None:
    writer, _ = new_writer(compressed=False)
    writer.node(START + 2, node_snapshot())
    with pytest.raises(ValueError, match="before the previous record"):
        writer.node(START + 1, node_snapshot())


# ----- files


def test_a_gz_name_is_written_as_gzip_and_any_other_name_as_plain_lines(tmp_path: Path) -> None:
    for name, magic in (("t.trace.gz", b"\x1f\x8b"), ("t.trace", b'{"schema"')):
        with TraceWriter.create(tmp_path / name, HEADER) as writer:
            writer.node(START, node_snapshot())
            writer.end(START + 1, EndReason.DURATION)
        assert (tmp_path / name).read_bytes().startswith(magic)
        header, items, truncation = read_trace(tmp_path / name)
        assert header == HEADER
        assert [type(i) for i in items] == [NodeSample, TraceEnd]
        assert truncation is None


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "t.trace.gz").write_bytes(b"an earlier incident")
    with pytest.raises(FileExistsError):
        TraceWriter.create(tmp_path / "t.trace.gz", HEADER)
    assert (tmp_path / "t.trace.gz").read_bytes() == b"an earlier incident"


def test_a_gzip_trace_killed_before_close_reads_up_to_its_last_flush(tmp_path: Path) -> None:
    path = tmp_path / "killed.trace.gz"
    writer = TraceWriter.create(path, HEADER)
    writer.node(START, node_snapshot())
    writer.cgroup(START, cgroup_snapshot())
    writer.flush()
    writer.cgroup(START + 1, cgroup_snapshot(current_bytes=1))  # never flushed: lost with the process
    # What SIGKILL leaves: the file as flushed, without the gzip end marker.
    data = path.read_bytes()
    with open_trace(path) as trace:
        pass
    _, items, reader = read_bytes(data)
    assert [type(i) for i in items] == [NodeSample, CgroupSample]
    assert reader.truncation is not None
    assert reader.truncation.reason is TruncationReason.GZIP_CUT
    assert reader.truncation.line == 4
    assert reader.end is None
    assert trace.header == HEADER


def test_a_plain_trace_cut_mid_line_reads_the_complete_lines_and_names_the_cut() -> None:
    writer, buffer = new_writer(compressed=False)
    writer.node(START, node_snapshot())
    writer.cgroup(START, cgroup_snapshot())
    writer.close()
    data = buffer.getvalue()
    _, items, reader = read_bytes(data[:-20])
    assert [type(i) for i in items] == [NodeSample]
    assert reader.truncation is not None
    assert reader.truncation.reason is TruncationReason.INCOMPLETE_LINE
    assert reader.truncation.line == 3


# ----- located errors


def plain_trace() -> bytes:
    writer, buffer = new_writer(compressed=False)
    writer.node(START, node_snapshot())
    writer.cgroup(START, cgroup_snapshot())
    writer.cgroup(START + 1, cgroup_snapshot(current_bytes=5))
    writer.close()
    return buffer.getvalue()


def with_line(data: bytes, number: int, change: Any) -> bytes:
    lines = data.decode().splitlines()
    record = json.loads(lines[number - 1])
    change(record)
    lines[number - 1] = json.dumps(record)
    return ("\n".join(lines) + "\n").encode()


def read_error(data: bytes) -> TraceError:
    with pytest.raises(TraceError) as info:
        read_bytes(data)
    return info.value


def test_an_unknown_schema_is_refused_by_name() -> None:
    error = read_error(with_line(plain_trace(), 1, lambda r: r.update(schema="remediator.trace/v2")))
    assert (error.line, error.field) == (1, "schema")
    assert "'remediator.trace/v2' is not supported" in str(error)
    assert SCHEMA in str(error)


def test_a_file_that_is_not_a_trace_says_so_on_line_1() -> None:
    error = read_error(b'{"hello": "world"}\n')
    assert (error.line, error.field) == (1, "schema")
    assert "not a remediator trace" in error.message


def test_a_bad_value_is_located_by_line_and_field() -> None:
    error = read_error(with_line(plain_trace(), 4, lambda r: r.update(current=-5)))
    assert str(error) == "mem.trace:4: current: expected a non-negative 64-bit integer, got -5"


def test_a_bad_map_value_names_the_key() -> None:
    error = read_error(with_line(plain_trace(), 3, lambda r: r["stat"].update(anon="1G")))
    assert (error.line, error.field) == (3, "stat.anon")


def test_a_first_record_without_every_field_is_an_error() -> None:
    error = read_error(with_line(plain_trace(), 3, lambda r: r.pop("events")))
    assert (error.line, error.field) == (3, "events")
    assert "first record" in error.message


def test_time_running_backwards_is_an_error() -> None:
    error = read_error(with_line(plain_trace(), 3, lambda r: r.update(t=2.0)))  # line 4 is at 1.0
    assert (error.line, error.field) == (4, "t")


def test_a_line_that_is_not_json_is_located() -> None:
    lines = plain_trace().split(b"\n")
    lines[2] = lines[2].replace(b'"t":', b'"t"#', 1)
    error = read_error(b"\n".join(lines))
    assert error.line == 3
    assert "not a JSON record" in error.message


def test_nan_is_not_a_number_a_trace_holds() -> None:
    error = read_error(plain_trace().replace(b'"t":1.0', b'"t":NaN'))
    assert error.line == 4


def test_gone_without_a_record_and_records_after_the_end_are_errors() -> None:
    data = plain_trace()
    gone = data + b'{"type":"gone","t":2,"cgroup":"never/seen"}\n'
    assert (read_error(gone).line, read_error(gone).field) == (5, "cgroup")
    after_end = data + b'{"type":"end","t":2,"reason":"duration"}\n{"type":"trigger","t":3,"cgroup":null}\n'
    assert read_error(after_end).line == 6


def test_corrupted_gzip_data_is_located_at_the_line_being_read() -> None:
    writer, buffer = new_writer(compressed=True)
    for i in range(200):
        writer.cgroup(START + i, cgroup_snapshot(current_bytes=i * 4096))
    writer.close()
    data = buffer.getvalue()
    # A damaged checksum: the data decodes, and the end says it is not what was written. zlib
    # drops the output of the call that finds it (at most 8 KiB), so the line is near the end.
    bad_crc = data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]
    error = read_error(bad_crc)
    assert error.line > 100
    assert error.field is None
    assert "corrupted gzip data (Error -3 while decompressing data: incorrect data check)" in error.message
    # Zeros over the second half: deflate decodes garbage before any check, so the error
    # is the first line that is not a record, somewhere after the intact first half.
    zeroed = data[: len(data) // 2] + bytes(len(data) - len(data) // 2)
    assert read_error(zeroed).line > 2


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot open"):
        open_trace(tmp_path / "absent.trace.gz")


def test_concatenated_gzip_members_read_as_one_trace() -> None:
    data = plain_trace()
    header, rest = data.split(b"\n", 1)
    joined = gzip.compress(header + b"\n") + gzip.compress(rest)
    _, items, reader = read_bytes(joined)
    assert len(items) == 3
    assert reader.truncation is None
