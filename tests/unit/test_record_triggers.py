"""``remediator record``'s PSI triggers (issue 15: replay fidelity): the daemon's triggers armed on
what is recorded, their events in the trace with their time, refusals said, ``--no-triggers``, a
SIGTERM during the trigger wait; and how ``replay`` uses the recorded events.

The triggers are the scripted source the watcher's tests use (tests/fake_triggers.py: real fds,
real poll(), real POLLPRI); the tree is the fake cgroupfs of tests/fakefs.py."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from remediator.cli import main
from remediator.clock import FakeClock, SystemClock
from remediator.commands.record import RecordRequest, run_record
from remediator.commands.record_triggers import TriggerKernel
from remediator.replay.engine import replay_trace
from remediator.settings import load_settings
from remediator.trace.format import CgroupSample, TargetTrigger, TraceEnd, TriggerFired
from remediator.trace.reader import read_trace
from tests.fake_triggers import FakeTriggers
from tests.fakefs import FakeKernel
from tests.replay_traces import SEED as REPLAY_SEED
from tests.replay_traces import SeedScript, stall, write_trace
from tests.unit.test_record_command import request

SEED = "system.slice/seed.service"
OTHER = "system.slice/other.service"
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
SERVICES = "full 100000 2000000"


class StepWaiter:
    """Moves the fake clock to the next scripted step (seconds since the start) or to the end of
    the wait, whichever comes first, and runs the step: a trigger fires at its own time."""

    def __init__(self, clock: FakeClock, script: Optional[Dict[float, Callable[[], object]]] = None) -> None:
        self.clock = clock
        self.start = clock.monotonic()
        self.script = dict(script or {})

    def wait(self, seconds: float) -> None:
        until = self.clock.monotonic() + seconds
        due = [at for at in self.script if self.start + at <= until]
        if not due:
            self.clock.advance(seconds)
            return
        at = min(due)
        self.clock.advance(max(0.0, self.start + at - self.clock.monotonic()))
        self.script.pop(at)()


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    kernel = FakeKernel(tmp_path / "tree")
    kernel.add_seed(SEED)
    kernel.add_cgroup(OTHER, current=10 << 20)
    kernel.add_cgroup("init.scope", current=10 << 20)  # the shipped policies exclude it
    return kernel


@pytest.fixture
def triggers(kernel: FakeKernel) -> Iterator[FakeTriggers]:
    fake = FakeTriggers(kernel.roots)
    yield fake
    fake.close()


def record(
    req: RecordRequest,
    triggers: FakeTriggers,
    script: Optional[Dict[float, Callable[[], object]]] = None,
) -> Tuple[int, str]:
    clock = FakeClock(start=100.0)
    err = io.StringIO()
    kernel = TriggerKernel(arm=triggers.arm, poll_factory=triggers.poll_factory, may_arm=True)
    code = run_record(req, clock, io.StringIO(), err, StepWaiter(clock, script), kernel)
    return code, err.getvalue()


def events(path: Path) -> List[TriggerFired]:
    _, items, _ = read_trace(path)
    return [item for item in items if isinstance(item, TriggerFired)]


def test_the_policies_triggers_are_armed_on_each_selected_cgroup_and_on_the_node(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    output = tmp_path / "armed.trace"
    armed: List[Tuple[Path, bytes]] = []
    code, _ = record(
        request(kernel, output),
        triggers,
        {1.5: lambda: armed.extend((t.path, t.written) for t in triggers.armed)},
    )
    assert code == 0
    # The daemon's triggers, written as the daemon writes them: services-cache on both services (not on
    # init.scope), and the node policy on /proc/pressure/memory (node-drop-caches ships disabled).
    assert sorted(armed) == sorted(
        [
            (kernel.roots.cgroup_file(OTHER, "memory.pressure"), b"full 100000 2000000\0"),
            (kernel.roots.cgroup_file(SEED, "memory.pressure"), b"full 100000 2000000\0"),
            (kernel.roots.proc_file("pressure/memory"), b"full 200000 2000000\0"),
        ]
    )
    header, _, _ = read_trace(output)
    assert header.triggers is not None and header.triggers.armed_later
    assert header.triggers.targets == (
        TargetTrigger("node", None, "full 200000 2000000", armed=True),
        TargetTrigger("services-cache", OTHER, SERVICES, armed=True),
        TargetTrigger("services-cache", SEED, SERVICES, armed=True),
    )
    # Every fd is closed at the end.
    assert all(t.closed_by_owner() for t in triggers.armed)


def test_named_cgroups_get_only_the_triggers_of_the_policies_that_select_them(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    output = tmp_path / "named.trace"
    assert record(request(kernel, output, cgroups=[SEED, "init.scope"]), triggers)[0] == 0
    header, _, _ = read_trace(output)
    assert header.triggers is not None
    assert [(t.policy, t.cgroup) for t in header.triggers.targets if t.cgroup is not None] == [
        ("services-cache", SEED)
    ]


def test_an_event_is_written_with_the_time_it_fired_and_its_cgroup_is_read_at_once(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    output = tmp_path / "event.trace.gz"
    code, _ = record(request(kernel, output), triggers, {1.25: lambda: triggers.fire(SEED)})
    assert code == 0
    (event,) = events(output)
    assert (event.t, event.cgroup, event.policy) == (1.25, SEED, "services-cache")
    _, items, truncation = read_trace(output)
    assert truncation is None
    # In time order among the samples: after the one at 1.0 s; then the node and the cgroup it fired on
    # are read at once, as the daemon reads them at its event; then the sample at 2.0 s.
    index = items.index(event)
    assert items[index - 1].t == 1.0
    after = items[index + 1 : index + 4]
    assert [(type(i).__name__, i.t) for i in after] == [
        ("NodeSample", 1.25),
        ("CgroupSample", 1.25),
        ("NodeSample", 2.0),
    ]
    assert isinstance(after[1], CgroupSample) and after[1].snapshot.cgroup == SEED


def test_the_fired_cgroup_is_read_again_at_the_daemons_verify_look(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    # services-cache's verify_sec is 2: the daemon looks again 2 s after acting on the event at 1.25 s.
    output = tmp_path / "verify.trace"
    code, _ = record(request(kernel, output, duration_sec=5.0), triggers, {1.25: lambda: triggers.fire(SEED)})
    assert code == 0
    _, items, _ = read_trace(output)
    reads = [
        (type(i).__name__, getattr(getattr(i, "snapshot", None), "cgroup", None))
        for i in items
        if i.t == 3.25
    ]
    assert reads == [("NodeSample", None), ("CgroupSample", SEED)]


def test_a_node_event_is_written_with_no_cgroup(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    output = tmp_path / "node.trace"
    assert record(request(kernel, output), triggers, {2.5: lambda: triggers.fire(None)})[0] == 0
    assert [(e.t, e.cgroup, e.policy) for e in events(output)] == [(2.5, None, "node")]


def test_a_refused_trigger_degrades_that_target_to_sampling_and_says_so_on_stderr_and_in_the_header(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    triggers.refuse(SEED, errno.EPERM)
    output = tmp_path / "refused.trace"
    code, err = record(request(kernel, output), triggers)
    assert code == 0
    assert "policy services-cache: trigger 'full 100000 2000000' refused" in err
    assert f"on {SEED}; its pressure is only sampled there" in err
    assert err.count("refused:") == 1  # said once, not at every sample's re-arming
    assert err.index("recording the node") < err.index("refused:")  # the first line stays the first
    header, items, _ = read_trace(output)
    assert header.triggers is not None
    (seed,) = [t for t in header.triggers.targets if t.cgroup == SEED]
    assert not seed.armed and "refused" in seed.reason
    assert all(t.armed for t in header.triggers.targets if t.cgroup != SEED)
    assert not header.triggers.events_recorded(SEED)
    assert header.triggers.events_recorded(OTHER)
    # Still sampled at every interval, and its trigger was tried once, not at every sample.
    assert [i.t for i in items if getattr(getattr(i, "snapshot", None), "cgroup", None) == SEED] == [
        0.0,
        1.0,
        2.0,
        3.0,
    ]


def test_where_triggers_may_not_be_written_nothing_is_armed_and_it_is_said(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    # The fake tree is not a cgroup2 mount and its proc root no procfs: the daemon would sample it.
    output = tmp_path / "copy.trace"
    clock = FakeClock(start=100.0)
    err = io.StringIO()
    kernel_triggers = TriggerKernel(arm=triggers.arm, poll_factory=triggers.poll_factory)
    assert (
        run_record(request(kernel, output), clock, io.StringIO(), err, StepWaiter(clock), kernel_triggers)
        == 0
    )
    assert triggers.armed == []
    assert "no PSI trigger armed: PSI triggers were not probed" in err.getvalue()
    header, _, _ = read_trace(output)
    assert header.triggers is not None and not header.triggers.armed_later
    assert header.triggers.targets and not any(t.armed for t in header.triggers.targets)


def test_no_triggers_arms_nothing_and_writes_the_header_without_the_field(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    output = tmp_path / "sampled.trace"
    assert record(request(kernel, output, triggers=False), triggers)[0] == 0
    assert triggers.armed == []
    header, _, _ = read_trace(output)
    assert header.triggers is None
    with output.open() as f:
        assert "triggers" not in json.loads(f.readline())


def test_the_command_line_flag_is_no_triggers(kernel: FakeKernel, tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("{}\n")
    common = [
        "--cgroup-root", str(kernel.cgroup_root), "--proc-root", str(kernel.proc_root),
        "--policies", str(REPO_POLICIES), "--config", str(tmp_path / "none.yaml"),
        "record", "--interval", "0.1", "--duration", "0.1",
    ]  # fmt: skip
    assert main([*common, "--no-triggers", "-o", str(tmp_path / "off.trace"), SEED]) == 0
    assert main([*common, "-o", str(tmp_path / "on.trace"), SEED]) == 0
    assert read_trace(tmp_path / "off.trace")[0].triggers is None
    assert read_trace(tmp_path / "on.trace")[0].triggers is not None


def test_sigterm_during_the_trigger_wait_ends_it_at_once_and_leaves_a_valid_file(
    kernel: FakeKernel, triggers: FakeTriggers, tmp_path: Path
) -> None:
    output = tmp_path / "stopped.trace.gz"
    before = signal.getsignal(signal.SIGTERM)
    kernel_triggers = TriggerKernel(arm=triggers.arm, poll_factory=triggers.poll_factory, may_arm=True)
    fire = threading.Timer(0.2, triggers.fire, (SEED,))
    stop = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    fire.start()
    stop.start()
    started = time.monotonic()
    # The interval is far longer than the test: only the signal ends the poll() of the triggers.
    code = run_record(
        request(kernel, output, interval_sec=60.0, duration_sec=None),
        SystemClock(),
        io.StringIO(),
        io.StringIO(),
        trigger_kernel=kernel_triggers,
    )
    fire.join()
    stop.join()
    assert code == 0
    assert time.monotonic() - started < 10
    assert signal.getsignal(signal.SIGTERM) is before
    _, items, truncation = read_trace(output)
    assert truncation is None
    (event,) = [i for i in items if isinstance(i, TriggerFired)]
    assert event.cgroup == SEED and 0.1 < event.t < 5
    assert isinstance(items[-1], TraceEnd) and items[-1].detail == "SIGTERM"
    assert all(t.closed_by_owner() for t in triggers.armed)


# ---- replay -----------------------------------------------------------------------------------


def _with_triggers(path: Path, targets: List[Dict[str, object]], events_at: List[float]) -> Path:
    """The trace at ``path`` (plain text) as `record` writes it with triggers: the header's field,
    and a trigger record of the seed at each time of ``events_at`` (seconds since the start)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    header, records = lines[0], lines[1:]
    header["triggers"] = {"armed_later": True, "targets": targets}
    for at in events_at:
        records.append({"type": "trigger", "t": at, "cgroup": REPLAY_SEED, "policy": "services-cache"})
    records.sort(key=lambda r: (r["t"], r["type"] == "end"))
    path.write_text("".join(json.dumps(r) + "\n" for r in [header, *records]))
    return path


def _replay(tmp_path: Path, events_at: Optional[List[float]], armed: bool = True) -> List[Tuple[float, str]]:
    tmp_path.mkdir(exist_ok=True)
    # Stall of 400 ms per second from t=5: the counters cross every trigger threshold from 5.4 s on.
    path = write_trace(tmp_path / "t.trace", SeedScript(stall((0, 5, 0), (5, 20, 400))))
    if events_at is not None:
        target = {"policy": "services-cache", "cgroup": REPLAY_SEED, "trigger": SERVICES, "armed": armed}
        if not armed:
            target["reason"] = "trigger 'full 100000 2000000' refused: Operation not permitted"
        _with_triggers(path, [target], events_at)
    directory = tmp_path / "policies.d"
    directory.mkdir()
    shutil.copy(REPO_POLICIES / "services-cache.yaml", directory)
    (directory / "services-cache.yaml").chmod(0o644)
    settings = load_settings(None, False, {"policies_dir": directory}, environ={})
    result = replay_trace(path, settings, workdir=tmp_path)
    return [(round(f.t, 6), f.cgroup or "") for f in result.firings]


def test_replay_fires_an_armed_cgroups_triggers_at_its_recorded_events_only(tmp_path: Path) -> None:
    # Times since the trace's start: the counters alone would fire first at about 5.4 s.
    assert _replay(tmp_path, [6.123, 8.5]) == [(6.123, REPLAY_SEED), (8.5, REPLAY_SEED)]


def test_replay_invents_no_event_for_an_armed_cgroup_that_never_fired(tmp_path: Path) -> None:
    assert _replay(tmp_path, []) == []


def test_replay_works_out_the_events_of_a_cgroup_the_recorder_could_not_arm(tmp_path: Path) -> None:
    worked_out = _replay(tmp_path / "old", None)
    assert worked_out  # the counters cross the threshold: today's events
    assert _replay(tmp_path / "refused", [], armed=False) == worked_out


def test_an_older_trace_without_the_field_still_replays_as_before(tmp_path: Path) -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "traces" / "seed-dry-run.trace.gz"
    header, _, _ = read_trace(fixture)
    assert header.triggers is None
    settings = load_settings(None, False, {"policies_dir": REPO_POLICIES}, environ={})
    result = replay_trace(fixture, settings, workdir=tmp_path)
    assert result.synthesized_triggers
    # Worked out from the counters, as before the field existed: the first at +5.2 s (README's demo).
    assert result.firings and round(min(f.t for f in result.firings if f.cgroup), 1) == 5.2
