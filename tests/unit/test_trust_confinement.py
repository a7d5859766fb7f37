"""Confinement: whatever a cgroup is called and whatever the tree holds, every write lands on an
allow-listed file (memory.high, memory.reclaim, vm.vfs_cache_pressure, vm.drop_caches) under the
two roots, or nowhere.

The names come from whoever creates cgroups (container runtimes, delegated subtrees, systemd
units with ``\\x2d`` escapes); the tree may be a copied or bind-mounted one with symlinks in it.
"""

from __future__ import annotations

import ast
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.clock import FakeClock
from remediator.daemon.confined_io import (
    CgroupFile,
    ConfinedIO,
    ConfinementError,
    PathNotConfined,
    ProcFile,
    WriteNotAllowed,
)
from remediator.daemon.discovery import desired_targets
from remediator.daemon.executor import Executor
from remediator.daemon.journal import CapturingWriter
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.notify import Notifier
from remediator.daemon.service import Service
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Watcher
from remediator.errors import KernelError
from remediator.kernel.capabilities import probe
from remediator.kernel.cgroup_tree import walk_cgroups
from remediator.kernel.psi_trigger import PsiTrigger, TriggerCheck, arm_trigger
from remediator.policy.loader import load_policy_text
from remediator.records import RecordType
from remediator.settings import load_settings
from tests.fake_triggers import FakeTriggers
from tests.fakefs import FakeKernel

REPO = Path(__file__).resolve().parents[2]
VICTIM = "system.slice/victim.service"
EVERYTHING = """\
target: {kind: cgroups, include: ["**"]}
trigger: {pressure: full, stall_ms: 100, window_ms: 2000}
actions: [{kind: reclaim}]
"""


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    k = FakeKernel(tmp_path / "k")
    k.add_cgroup(VICTIM, current=1 << 30, high=None)
    return k


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    for name in ("memory.high", "memory.reclaim", "memory.pressure", "drop_caches", "shadow"):
        (d / name).write_text("untouched\n")
    return d


def files_under(directory: Path) -> Dict[str, bytes]:
    return {
        str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()
    }


# ---- symlinks inside the tree ---------------------------------------------------------


def test_symlink_to_another_cgroup_inside_the_tree_is_refused(kernel: FakeKernel) -> None:
    # Even inside the root: a link is how a name the policy selected would reach a cgroup it did not.
    os.symlink(kernel.cgroup_root / VICTIM, kernel.cgroup_root / "system.slice" / "link.service")

    with pytest.raises(PathNotConfined, match="symlink"):
        ConfinedIO(kernel.roots).write(CgroupFile("system.slice/link.service", "memory.high"), b"1")

    assert kernel.read_file(VICTIM, "memory.high") == "max\n"


def test_allow_listed_name_linked_to_a_file_off_the_list_is_refused(kernel: FakeKernel) -> None:
    # memory.high -> memory.max of the same cgroup: the allow-list is about the file, not its name.
    target = kernel.cgroup_root / VICTIM / "memory.high"
    target.unlink()
    os.symlink("memory.max", target)

    with pytest.raises(PathNotConfined):
        ConfinedIO(kernel.roots).write(CgroupFile(VICTIM, "memory.high"), b"1")

    assert kernel.read_file(VICTIM, "memory.max") == "max\n"


def test_directory_in_place_of_an_interface_file_is_refused(kernel: FakeKernel) -> None:
    target = kernel.cgroup_root / VICTIM / "memory.reclaim"
    target.unlink()
    target.mkdir()

    with pytest.raises(PathNotConfined, match="not a regular file"):
        ConfinedIO(kernel.roots).write(CgroupFile(VICTIM, "memory.reclaim"), b"1")


def test_psi_trigger_never_follows_a_symlinked_pressure_file(kernel: FakeKernel, outside: Path) -> None:
    # Arming a trigger is a write too: it must not land on the file a planted link names.
    pressure = kernel.cgroup_root / VICTIM / "memory.pressure"
    pressure.unlink()
    os.symlink(outside / "shadow", pressure)

    with pytest.raises(KernelError):
        arm_trigger(pressure, PsiTrigger("full", 100_000, 2_000_000))

    assert (outside / "shadow").read_text() == "untouched\n"


# ---- names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/" + VICTIM, "//" + VICTIM + "/"])
def test_absolute_cgroup_names_stay_under_the_cgroup_root(kernel: FakeKernel, name: str) -> None:
    # "/system.slice/x" is how /proc/<pid>/cgroup prints it: relative to the root, never the host's /.
    ConfinedIO(kernel.roots).write(CgroupFile(name, "memory.high"), b"4096")

    assert kernel.read_file(VICTIM, "memory.high") == "4096"


@pytest.mark.parametrize(
    "name", ["..", "../k/cgroup/" + VICTIM, VICTIM + "/..", "system.slice/../../outside", "a\nb", "a\0b"]
)
def test_names_with_dot_dot_or_control_characters_are_refused(kernel: FakeKernel, name: str) -> None:
    with pytest.raises(WriteNotAllowed):
        ConfinedIO(kernel.roots).write(CgroupFile(name, "memory.high"), b"1")


def test_systemd_escapes_name_a_literal_directory_never_the_unescaped_one(kernel: FakeKernel) -> None:
    # systemd names "foo-bar" units' cgroups with \x2d; remediator never unescapes: the
    # literal directory is written, the look-alike "foo-bar" is not.
    escaped = "system.slice/foo\\x2dbar.service"
    kernel.add_cgroup(escaped)
    kernel.add_cgroup("system.slice/foo-bar.service")

    ConfinedIO(kernel.roots).write(CgroupFile(escaped, "memory.high"), b"8192")

    assert (kernel.cgroup_root / "system.slice" / "foo\\x2dbar.service" / "memory.high").read_text() == "8192"
    assert kernel.read_file("system.slice/foo-bar.service", "memory.high") == "max\n"


@pytest.mark.parametrize(
    "relative",
    ["/sys/vm/drop_caches", "sys/vm/./drop_caches", "sys//vm/drop_caches", "sys/vm/vfs_cache_pressure/..",
     "sys/vm/swappiness", "sysrq-trigger", "sys/kernel/core_pattern"],
)  # fmt: skip
def test_proc_writes_are_held_to_the_two_vm_sysctls(kernel: FakeKernel, relative: str) -> None:
    with pytest.raises(WriteNotAllowed):
        ConfinedIO(kernel.roots).write(ProcFile(relative), b"1")


# ---- a cgroup name with a newline -------------------------------------------------------


def test_walk_skips_a_cgroup_whose_name_has_a_newline(kernel: FakeKernel) -> None:
    # mkdir accepts it (a delegated subtree's owner can make one); no path can be built from it.
    kernel.add_cgroup("system.slice/evil\nname.service")
    kernel.add_cgroup("system.slice/evil\nname.service/child")

    walked = list(walk_cgroups(kernel.roots))

    assert VICTIM in walked
    assert not any("\n" in name for name in walked)


def test_discovery_survives_a_cgroup_whose_name_has_a_newline(kernel: FakeKernel) -> None:
    kernel.add_cgroup("evil\nname.slice")
    policy, _issues = load_policy_text(EVERYTHING, "all.yaml", "all")
    assert policy is not None

    targets = desired_targets(kernel.roots, [policy])

    assert {key.cgroup for key in targets} == {"system.slice", VICTIM}


def test_daemon_keeps_running_when_a_cgroup_with_a_newline_appears(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    policies = tmp_path / "policies.d"
    policies.mkdir()
    (policies / "all.yaml").write_text(EVERYTHING)
    settings_ = load_settings(
        None,
        False,
        {"cgroup_root": kernel.cgroup_root, "proc_root": kernel.proc_root, "policies_dir": policies,
         "state_file": tmp_path / "run" / "state.json", "rescan_interval_sec": 1},
        environ={},
    )  # fmt: skip
    clock = FakeClock()
    triggers = FakeTriggers(kernel.roots)
    writer = CapturingWriter()
    service = Service(
        settings=settings_, clock=clock, writer=writer, notifier=Notifier(environ={}),
        executor=Executor(KernelFiles.under(kernel.roots), StateStore(settings_.state_file), clock),
        watcher=Watcher(kernel.roots, clock, 2.0, arm=triggers.arm, poll_factory=triggers.poll_factory),
        capabilities=probe(kernel.roots, trigger_checker=lambda _p, _s: TriggerCheck(True, "", None)),
    )  # fmt: skip
    try:
        service.start()
        kernel.add_cgroup("system.slice/evil\nname.service")
        kernel.add_cgroup("system.slice/late.service")
        clock.advance(1)
        service.step()  # the rescan that sees both
    finally:
        service.watcher.close()
        triggers.close()

    watched = {r.cgroup for r in writer.records if r.type == RecordType.WATCH_STARTED}
    assert "system.slice/late.service" in watched
    assert not any(c and "\n" in c for c in watched)


# ---- whatever the name: nothing outside the allow-list changes --------------------------

NAME_PIECES = ["..", ".", "/", "//", "\\x2d", "\n", "\0", "system.slice", "victim.service", "link",
               "outside", "memory.high", "~", " ", "é", "%2e%2e"]  # fmt: skip
hostile_names = st.lists(st.sampled_from(NAME_PIECES) | st.text(max_size=3), max_size=8).map("".join)


@pytest.fixture(scope="module")
def booby_trapped_tree() -> Iterator[FakeKernel]:
    """A tree with links out of it and across it, and files outside it that must never change."""
    with tempfile.TemporaryDirectory() as base:
        k = FakeKernel(Path(base) / "k")
        k.add_cgroup(VICTIM)
        outside = Path(base) / "outside"
        outside.mkdir()
        for name in ("memory.high", "memory.reclaim", "drop_caches"):
            (outside / name).write_text("untouched\n")
        os.symlink(outside, k.cgroup_root / "link")
        os.symlink(outside, k.cgroup_root / "system.slice" / "outside")
        os.symlink(k.cgroup_root / VICTIM, k.cgroup_root / "system.slice" / "link")
        (k.cgroup_root / "system.slice" / "memory.high").unlink()
        os.symlink(outside / "memory.high", k.cgroup_root / "system.slice" / "memory.high")
        yield k


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_names, filename=st.sampled_from(["memory.high", "memory.reclaim"]))
def test_no_cgroup_name_leads_a_write_off_the_allow_list_or_out_of_the_root(
    booby_trapped_tree: FakeKernel, name: str, filename: str
) -> None:
    kernel = booby_trapped_tree
    base = kernel.base.parent
    before = files_under(base)
    with contextlib.suppress(ConfinementError, KernelError):
        ConfinedIO(kernel.roots).write(CgroupFile(name, filename), b"4096")
    after = files_under(base)
    changed: List[str] = [path for path in before if after.get(path) != before[path]]
    for path in changed:
        real = Path(path)
        assert real.parent.is_relative_to(kernel.cgroup_root), path
        assert real.name == filename, path
        # Restore it for the next example.
        real.write_bytes(before[path])


# ---- the single writer ------------------------------------------------------------------

# Every place in the program that may open a file for writing, and why.
KNOWN_WRITERS = {
    "remediator/daemon/confined_io.py": "the only writer of kernel values (allow-listed, confined)",
    "remediator/kernel/psi_trigger.py": "PSI trigger registration on pressure files (O_NOFOLLOW)",
    "remediator/daemon/state_store.py": "the state file (private directory, atomic rename)",
    "remediator/metrics.py": "the metrics textfile (O_EXCL|O_NOFOLLOW temporary beside it, renamed over it)",
    "remediator/daemon/pid_file.py": "the PID file (O_EXCL temporary, renamed)",
    "remediator/trace/writer.py": "a trace the operator asked for (O_EXCL)",
    "remediator/cli.py": "stdout re-pointed at /dev/null on EPIPE",
    "remediator/daemon/last_valid.py": "the last valid policy set, kept beside the state",
    "remediator/replay/tree.py": "a replay's private temporary tree",
    "remediator/daemon/flight_recorder.py": (
        "incident traces: O_EXCL|O_NOFOLLOW, 0600, in <state dir>/incidents (0700, checked ours alone)"
    ),
}
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"}
_WRITE_CALLS = {"write_text", "write_bytes", "ftruncate", "truncate"}


def _writes_in(tree: ast.AST) -> List[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _WRITE_FLAGS | _WRITE_CALLS:
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else None
            if (
                isinstance(mode, ast.Constant)
                and isinstance(mode.value, str)
                and set(mode.value) & set("wax+")
            ):
                lines.append(node.lineno)
    return lines


def test_only_the_known_writers_open_files_for_writing() -> None:
    found = {}
    for path in sorted((REPO / "remediator").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        lines = _writes_in(ast.parse(path.read_text(), relative))
        if lines:
            found[relative] = lines
    unexpected = {path: lines for path, lines in found.items() if path not in KNOWN_WRITERS}
    assert unexpected == {}, "a new writer: route kernel writes through ConfinedIO, or add it here with why"
    assert "remediator/daemon/confined_io.py" in found
