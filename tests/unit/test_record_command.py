"""`remediator record` on the fake tree with a fake clock: what it samples, when, and that it
always leaves a trace that reads back whole (duration, SIGTERM, cgroups that come and go)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from remediator.cli import main
from remediator.clock import FakeClock
from remediator.commands import record as record_module
from remediator.commands.record import RecordRequest, run_record
from remediator.kernel.roots import KernelRoots
from remediator.kernel.snapshot import read_node_snapshot
from remediator.policy.loader import load_policy_dir
from remediator.readings import NodeSnapshot
from remediator.trace.format import (
    CgroupRemoved,
    CgroupSample,
    EndReason,
    NodeSample,
    TraceEnd,
    TraceItem,
    TraceSource,
)
from remediator.trace.reader import read_trace
from tests.fakefs import FakeKernel, pressure_text

SEED = "system.slice/seed.service"
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


class ScriptedWaiter:
    """Advances the fake clock instead of sleeping, and runs each scripted step once the
    clock has reached its time (seconds since the recording started)."""

    def __init__(self, clock: FakeClock, script: Optional[Dict[float, Callable[[], None]]] = None) -> None:
        self.clock = clock
        self.start = clock.monotonic()
        self.script = dict(script or {})
        self.waits: List[float] = []

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)
        for at in sorted(self.script):
            if self.clock.monotonic() - self.start >= at:
                self.script.pop(at)()


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    kernel = FakeKernel(tmp_path / "tree")
    kernel.add_seed(SEED)
    kernel.add_cgroup("init.scope", current=10 << 20)  # the shipped policies exclude it
    return kernel


def request(kernel: FakeKernel, output: Path, **changes: object) -> RecordRequest:
    policies = load_policy_dir(REPO_POLICIES, allow_untrusted=True).enabled
    fields: Dict[str, object] = {
        "roots": kernel.roots,
        "policies": policies,
        "policies_dir": REPO_POLICIES,
        "cgroups": (),
        "all_cgroups": False,
        "output": output,
        "interval_sec": 1.0,
        "duration_sec": 3.0,
    }
    fields.update(changes)
    return RecordRequest(**fields)  # type: ignore[arg-type]


def record(req: RecordRequest, waiter_script: Optional[Dict[float, Callable[[], None]]] = None) -> int:
    clock = FakeClock(start=100.0)
    return run_record(req, clock, io.StringIO(), io.StringIO(), ScriptedWaiter(clock, waiter_script))


def samples(items: List[TraceItem], cgroup: str) -> List[CgroupSample]:
    return [i for i in items if isinstance(i, CgroupSample) and i.snapshot.cgroup == cgroup]


def test_records_the_node_and_what_the_policies_select_at_every_interval_of_the_duration(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    output = tmp_path / "seed.trace.gz"
    assert record(request(kernel, output)) == 0
    header, items, truncation = read_trace(output)
    assert truncation is None
    assert header.source is TraceSource.RECORD
    assert header.interval_sec == 1.0
    assert header.start_monotonic == 100.0
    assert header.kernel_release == "6.1.0-fake-amd64"
    assert {p.file: p.sha256 for p in header.policies} == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(REPO_POLICIES.glob("*.yaml"))
    }
    # A sample at the start and at every interval up to and including the end of the duration.
    assert [i.t for i in items if isinstance(i, NodeSample)] == [0.0, 1.0, 2.0, 3.0]
    assert [s.t for s in samples(items, SEED)] == [0.0, 1.0, 2.0, 3.0]
    assert samples(items, "init.scope") == []
    assert samples(items, SEED)[0].snapshot.events.oom_kill == 1
    assert samples(items, SEED)[0].node is not None
    end = items[-1]
    assert isinstance(end, TraceEnd) and end.reason is EndReason.DURATION


def test_named_cgroups_are_recorded_instead_of_the_policies_selection(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    output = tmp_path / "named.trace"
    assert record(request(kernel, output, cgroups=("init.scope",), duration_sec=1.0)) == 0
    _, items, _ = read_trace(output)
    assert [s.t for s in samples(items, "init.scope")] == [0.0, 1.0]
    assert samples(items, SEED) == []


def test_a_changed_value_reads_back_at_the_sample_after_the_change(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    output = tmp_path / "change.trace.gz"

    def tighten() -> None:
        kernel.set_file(SEED, "memory.high", f"{3 << 30}\n")
        kernel.set_pressure(SEED, pressure_text((90.0, 50.0, 20.0, 200000000)))

    assert record(request(kernel, output), {1.5: tighten}) == 0
    _, items, _ = read_trace(output)
    seed = samples(items, SEED)
    assert [s.snapshot.high_bytes for s in seed] == [None, None, 3 << 30, 3 << 30]
    assert seed[2].snapshot.pressure.some.total_us == 200000000


def test_sigterm_mid_run_ends_the_trace_cleanly_with_a_closed_gzip_file(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    output = tmp_path / "stopped.trace.gz"
    before = signal.getsignal(signal.SIGTERM)

    def terminate() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    assert record(request(kernel, output, duration_sec=None), {2.5: terminate}) == 0
    _, items, truncation = read_trace(output)
    assert truncation is None  # the gzip end marker is there
    end = items[-1]
    assert isinstance(end, TraceEnd)
    assert (end.reason, end.detail) == (EndReason.SIGNAL, "SIGTERM")
    assert [s.t for s in samples(items, SEED)] == [0.0, 1.0, 2.0]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_removed_cgroup_gets_a_gone_record_and_a_new_one_is_recorded_from_the_next_sample(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    output = tmp_path / "churn.trace.gz"
    new = "system.slice/new.service"

    def add() -> None:
        kernel.add_cgroup(new, current=1 << 20)

    def remove() -> None:
        shutil.rmtree(kernel.cgroup_root / SEED)

    assert record(request(kernel, output, duration_sec=4.0), {1.5: add, 2.5: remove}) == 0
    _, items, _ = read_trace(output)
    assert [s.t for s in samples(items, new)] == [2.0, 3.0, 4.0]
    assert [s.t for s in samples(items, SEED)] == [0.0, 1.0, 2.0]
    gone = [i for i in items if isinstance(i, CgroupRemoved)]
    assert [(g.cgroup, g.t) for g in gone] == [(SEED, 3.0)]


def test_recording_changes_nothing_in_the_tree(kernel: FakeKernel, tmp_path: Path) -> None:
    before = kernel.snapshot_files()
    assert record(request(kernel, tmp_path / "ro.trace.gz")) == 0
    assert kernel.snapshot_files() == before


def test_an_existing_output_file_is_left_alone_and_the_command_fails(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    output = tmp_path / "incident.trace.gz"
    output.write_bytes(b"last night")
    err = io.StringIO()
    clock = FakeClock()
    assert run_record(request(kernel, output), clock, io.StringIO(), err, ScriptedWaiter(clock)) == 1
    assert output.read_bytes() == b"last night"
    assert "exists" in err.getvalue()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"interval_sec": 0.01}, "--interval must be at least 0.1 s"),
        ({"duration_sec": 0.0}, "--duration must be a positive number"),
        ({"cgroups": ("a/../b",)}, "invalid cgroup name"),
    ],
)
def test_bad_arguments_are_usage_errors_and_create_no_file(
    kernel: FakeKernel, tmp_path: Path, changes: Dict[str, object], message: str
) -> None:
    err = io.StringIO()
    clock = FakeClock()
    output = tmp_path / "never.trace.gz"
    assert (
        run_record(request(kernel, output, **changes), clock, io.StringIO(), err, ScriptedWaiter(clock)) == 2
    )
    assert message in err.getvalue()
    assert not output.exists()


def test_an_overrunning_sample_skips_the_slots_it_missed(
    kernel: FakeKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "slow.trace"
    clock = FakeClock(start=100.0)
    real_read = read_node_snapshot
    reads = []

    def slow_first_read(roots: KernelRoots) -> NodeSnapshot:
        reads.append(clock.monotonic())
        if len(reads) == 1:
            clock.advance(2.5)  # the first sample takes 2.5 intervals
        return real_read(roots)

    monkeypatch.setattr(record_module, "read_node_snapshot", slow_first_read)
    req = request(kernel, output, duration_sec=4.0)
    assert run_record(req, clock, io.StringIO(), io.StringIO(), ScriptedWaiter(clock)) == 0
    _, items, _ = read_trace(output)
    assert [i.t for i in items if isinstance(i, NodeSample)] == [0.0, 3.0, 4.0]
    assert [s.t for s in samples(items, SEED)] == [2.5, 3.0, 4.0]


def test_the_command_line_records_with_the_real_clock_and_stops_on_sigterm_at_once(
    kernel: FakeKernel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "none.yaml").write_text("{}\n")
    output = tmp_path / "cli.trace.gz"
    # The interval is far longer than the test: only the signal ending the wait ends the command.
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    code = main(
        [
            "--cgroup-root", str(kernel.cgroup_root), "--proc-root", str(kernel.proc_root),
            "--policies", str(REPO_POLICIES), "--config", str(tmp_path / "none.yaml"),
            "record", "--interval", "30", "-o", str(output), SEED,
        ]
    )  # fmt: skip
    timer.join()
    assert code == 0
    assert time.monotonic() - started < 20
    _, items, truncation = read_trace(output)
    assert truncation is None
    assert len(samples(items, SEED)) == 1
    assert isinstance(items[-1], TraceEnd) and items[-1].detail == "SIGTERM"
    assert f"{output}: 1 sample of the node and 1 cgroup (0 gone)" in capsys.readouterr().out


def test_a_cgroup_that_cannot_be_read_is_said_once_and_not_called_gone(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    output = tmp_path / "unreadable.trace.gz"
    clock = FakeClock(start=100.0)
    err = io.StringIO()

    def garble() -> None:
        kernel.set_file(SEED, "memory.current", "garbage\n")

    def repair() -> None:
        kernel.set_file(SEED, "memory.current", "4096\n")

    waiter = ScriptedWaiter(clock, {0.5: garble, 2.5: repair})
    assert run_record(request(kernel, output), clock, io.StringIO(), err, waiter) == 0
    _, items, _ = read_trace(output)
    assert [s.t for s in samples(items, SEED)] == [0.0, 3.0]
    assert samples(items, SEED)[1].snapshot.current_bytes == 4096
    assert not [i for i in items if isinstance(i, CgroupRemoved)]
    assert err.getvalue().count("expected a non-negative integer, got 'garbage'") == 1


def test_the_file_on_disk_holds_every_sample_taken_so_far_while_recording(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    # What a recorder killed with SIGKILL (or a node that dies) leaves behind.
    output = tmp_path / "midway.trace.gz"
    midway = tmp_path / "copy.trace.gz"

    def copy() -> None:
        shutil.copyfile(output, midway)

    assert (
        record(
            request(kernel, output, duration_sec=None),
            {2.5: copy, 4.5: lambda: os.kill(os.getpid(), signal.SIGINT)},
        )
        == 0
    )
    _, items, truncation = read_trace(midway)
    assert [s.t for s in samples(items, SEED)] == [0.0, 1.0, 2.0]
    assert truncation is not None and truncation.line == len(items) + 2
