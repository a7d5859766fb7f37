"""The capability probe: fake v2 and hybrid layouts, trigger windows by privilege, the real host read-only."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.errors import KernelParseError
from remediator.kernel.capabilities import (
    LAYOUT_HYBRID,
    LAYOUT_LEGACY,
    LAYOUT_NONE,
    LAYOUT_UNIFIED,
    PROBE_SHORT_WINDOW_TRIGGER,
    PROBE_TRIGGER,
    Mount,
    parse_cap_sys_resource,
    parse_kernel_version,
    parse_mounts,
    probe,
)
from remediator.kernel.psi_trigger import PsiTrigger, TriggerCheck
from remediator.kernel.roots import KernelRoots
from tests.fakefs import FakeKernel

CAP_EFF_WITHOUT_SYS_RESOURCE = "000001fffeffffff"  # the dev host's sandbox: every capability but bit 24
CAP_EFF_FULL = "000001ffffffffff"


class ScriptedTriggers:
    """Stands in for arming: answers by window, records what was asked."""

    def __init__(self, accept_2s: bool, accept_1s: bool, refusal: int = errno.EINVAL) -> None:
        self.accept = {PROBE_TRIGGER.window_us: accept_2s, PROBE_SHORT_WINDOW_TRIGGER.window_us: accept_1s}
        self.refusal = refusal
        self.calls: List[Tuple[Path, PsiTrigger]] = []

    def __call__(self, path: Path, spec: PsiTrigger) -> TriggerCheck:
        self.calls.append((path, spec))
        if self.accept[spec.window_us]:
            return TriggerCheck(accepted=True, reason="accepted")
        return TriggerCheck(
            accepted=False, reason=f"refused ({errno.errorcode[self.refusal]})", errno=self.refusal
        )


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def _write_status(kernel: FakeKernel, cap_eff: str) -> None:
    (kernel.proc_root / "self" / "status").write_text(
        f"Name:\tremediator\nCapPrm:\t{cap_eff}\nCapEff:\t{cap_eff}\n"
    )


def _write_hybrid_mounts(kernel: FakeKernel) -> Path:
    """The dev host's layout under the fake root: tmpfs root, v1 controllers, cgroup2 at unified."""
    root = kernel.cgroup_root
    unified = root / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    (unified / "memory.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    (kernel.proc_root / "self" / "mounts").write_text(
        "proc /proc proc rw,relatime 0 0\n"
        f"tmpfs {root} tmpfs rw,relatime,mode=755 0 0\n"
        f"cgroup {root}/cpu cgroup rw,relatime,cpu 0 0\n"
        f"cgroup {root}/memory cgroup rw,relatime,memory 0 0\n"
        f"cgroup {root}/systemd cgroup rw,relatime,name=systemd 0 0\n"
        f"cgroup2 {unified} cgroup2 rw,relatime 0 0\n"
    )
    return unified


def test_probe_of_a_fake_v2_tree_finds_everything_usable(kernel: FakeKernel) -> None:
    kernel.add_seed()
    caps = probe(kernel.roots, trigger_checker=ScriptedTriggers(accept_2s=True, accept_1s=True))
    assert caps.layout == LAYOUT_UNIFIED
    assert caps.cgroup2_mount_points == (str(kernel.cgroup_root),)
    assert caps.cgroup_root_is_cgroup2
    assert "memory" in caps.root_controllers
    assert caps.memory_controller_v2
    assert caps.can_remediate_cgroups
    assert caps.memory_reclaim_present is True
    assert caps.memory_reclaim
    assert caps.psi_present
    assert caps.kernel_release == "6.1.0-fake-amd64"
    assert caps.kernel_version == (6, 1)
    assert caps.watch_mode == "triggers"
    text = caps.explanation()
    assert "with the memory controller" in text
    assert "memory.reclaim file is present" in text
    assert "(any window)" in text


def test_probe_arms_on_the_node_pressure_file_of_the_proc_root(kernel: FakeKernel) -> None:
    triggers = ScriptedTriggers(accept_2s=True, accept_1s=True)
    probe(kernel.roots, trigger_checker=triggers)
    assert triggers.calls == [
        (kernel.proc_root / "pressure" / "memory", PROBE_TRIGGER),
        (kernel.proc_root / "pressure" / "memory", PROBE_SHORT_WINDOW_TRIGGER),
    ]


def test_probe_never_arms_or_writes_on_a_tree_that_is_not_procfs(kernel: FakeKernel) -> None:
    kernel.add_seed()
    before = kernel.snapshot_files()
    caps = probe(kernel.roots)
    assert kernel.snapshot_files() == before
    assert caps.trigger is None
    assert caps.triggers_accepted is None
    assert "not a procfs mount" in caps.trigger_not_probed_reason
    assert "were not probed" in caps.explanation()


def test_without_cap_sys_resource_only_2s_windows_are_expected_to_arm(kernel: FakeKernel) -> None:
    _write_status(kernel, CAP_EFF_WITHOUT_SYS_RESOURCE)
    caps = probe(kernel.roots, trigger_checker=ScriptedTriggers(accept_2s=True, accept_1s=False))
    assert caps.cap_sys_resource is False
    assert caps.triggers_accepted is True
    assert caps.watch_mode == "triggers"
    text = caps.explanation()
    assert "only with windows that are multiples of 2 s" in text
    assert "EINVAL" in text
    assert "lacks CAP_SYS_RESOURCE" in text


def test_refused_triggers_mean_sampling_with_the_errno_said(kernel: FakeKernel) -> None:
    _write_status(kernel, CAP_EFF_FULL)
    caps = probe(kernel.roots, trigger_checker=ScriptedTriggers(accept_2s=False, accept_1s=False))
    assert caps.cap_sys_resource is True
    assert caps.triggers_accepted is False
    assert caps.trigger is not None and caps.trigger.errno == errno.EINVAL
    assert caps.watch_mode == "sampling"
    assert "PSI triggers are refused (refused (EINVAL))" in caps.explanation()
    assert "sampled on a timer" in caps.explanation()


def test_probe_of_a_hybrid_layout_says_only_node_pressure_can_be_watched(kernel: FakeKernel) -> None:
    unified = _write_hybrid_mounts(kernel)
    caps = probe(kernel.roots, trigger_checker=ScriptedTriggers(accept_2s=False, accept_1s=False))
    assert caps.layout == LAYOUT_HYBRID
    assert caps.cgroup2_mount_points == (str(unified),)
    assert caps.memory_v1_mount_points == (str(kernel.cgroup_root / "memory"),)
    assert caps.memory_bound_to_v1
    assert not caps.cgroup_root_is_cgroup2
    assert not caps.memory_controller_v2
    assert not caps.can_remediate_cgroups
    assert not caps.memory_reclaim
    lines = caps.summary_lines()
    assert any(
        f"Cgroup v2 is mounted at {unified} but the memory controller is bound to cgroup v1" in line
        and "hybrid layout" in line
        and "only node-level pressure can be watched" in line
        for line in lines
    )
    assert any(f"The cgroup root {kernel.cgroup_root} is not a cgroup2 mount" in line for line in lines)
    assert all(line.endswith(".") for line in lines)


def test_hybrid_layout_with_the_root_on_the_v2_mount_still_has_no_memory_controller(
    kernel: FakeKernel,
) -> None:
    unified = _write_hybrid_mounts(kernel)
    caps = probe(KernelRoots(cgroup_root=unified, proc_root=kernel.proc_root))
    assert caps.layout == LAYOUT_HYBRID
    assert caps.cgroup_root_is_cgroup2
    assert caps.root_controllers == ("hugetlb",)
    assert not caps.memory_controller_v2
    assert caps.memory_reclaim_present is None
    assert not any("is not a cgroup2 mount" in line for line in caps.summary_lines())


def test_legacy_layout_without_cgroup2(kernel: FakeKernel) -> None:
    (kernel.proc_root / "self" / "mounts").write_text(
        f"proc /proc proc rw 0 0\ntmpfs {kernel.cgroup_root} tmpfs rw 0 0\n"
        f"cgroup {kernel.cgroup_root}/memory cgroup rw,memory 0 0\n"
    )
    caps = probe(kernel.roots)
    assert caps.layout == LAYOUT_LEGACY
    assert "remediator supports cgroup v2 only" in caps.explanation()


def test_no_cgroups_at_all(kernel: FakeKernel) -> None:
    (kernel.proc_root / "self" / "mounts").write_text(
        f"proc /proc proc rw 0 0\ntmpfs {kernel.cgroup_root} tmpfs rw 0 0\n"
    )
    caps = probe(kernel.roots)
    assert caps.layout == LAYOUT_NONE
    assert not caps.memory_controller_v2
    assert "Neither cgroup v2 nor" in caps.explanation()


def test_memory_enabled_but_not_for_children_cannot_remediate(kernel: FakeKernel) -> None:
    (kernel.cgroup_root / "cgroup.subtree_control").write_text("cpu io pids\n")
    caps = probe(kernel.roots)
    assert caps.memory_controller_v2
    assert not caps.can_remediate_cgroups
    assert "not enabled for child cgroups" in caps.explanation()


def test_missing_memory_reclaim_is_found_in_a_child_cgroup(kernel: FakeKernel) -> None:
    kernel.add_cgroup("old.service", with_reclaim=False)
    caps = probe(kernel.roots)
    assert caps.memory_reclaim_present is False
    assert not caps.memory_reclaim
    assert "memory.reclaim file is missing" in caps.explanation()


def test_without_a_child_cgroup_memory_reclaim_is_inferred_from_the_kernel_version(
    kernel: FakeKernel,
) -> None:
    caps = probe(kernel.roots)
    assert caps.memory_reclaim_present is None
    assert caps.memory_reclaim  # 6.1 >= 5.19
    (kernel.proc_root / "sys" / "kernel" / "osrelease").write_text("5.15.0-91-generic\n")
    assert not probe(kernel.roots).memory_reclaim


def test_without_psi_nothing_is_armed_and_nothing_can_be_watched(kernel: FakeKernel) -> None:
    shutil.rmtree(kernel.proc_root / "pressure")
    triggers = ScriptedTriggers(accept_2s=True, accept_1s=True)
    caps = probe(kernel.roots, trigger_checker=triggers)
    assert not caps.psi_present
    assert not caps.psi_present
    assert caps.watch_mode == "none"
    assert triggers.calls == []
    assert "PSI is not available" in caps.explanation()


def test_an_unreadable_mount_table_is_reported_not_raised(kernel: FakeKernel) -> None:
    (kernel.proc_root / "self" / "mounts").unlink()
    caps = probe(kernel.roots)
    assert caps.mounts_error
    assert not caps.cgroup_root_is_cgroup2
    assert "mount table could not be read" in caps.explanation()


def test_as_json_holds_the_findings_and_the_summary(kernel: FakeKernel) -> None:
    caps = probe(kernel.roots, trigger_checker=ScriptedTriggers(accept_2s=True, accept_1s=False))
    data = caps.as_json()
    assert data["layout"] == LAYOUT_UNIFIED
    assert data["memory_controller_v2"] is True
    assert data["trigger_1s_window"] == {"accepted": False, "errno": "EINVAL", "reason": "refused (EINVAL)"}
    assert data["summary"] == caps.summary_lines()


def test_parse_mounts_decodes_octal_escapes_in_paths() -> None:
    mounts = parse_mounts("cgroup2 /mnt/with\\040space\\134x cgroup2 rw,nosuid 0 0\n")
    assert mounts == (Mount("cgroup2", "/mnt/with space\\x", "cgroup2", ("rw", "nosuid")),)


def test_parse_mounts_refuses_a_line_without_fstype_and_options() -> None:
    with pytest.raises(KernelParseError, match="mounts"):
        parse_mounts("proc /proc\n", "mounts")


def test_parse_cap_sys_resource_reads_bit_24_of_cap_eff() -> None:
    assert parse_cap_sys_resource(f"CapEff:\t{CAP_EFF_WITHOUT_SYS_RESOURCE}\n") is False
    assert parse_cap_sys_resource(f"CapEff:\t{CAP_EFF_FULL}\n") is True
    assert parse_cap_sys_resource("Name:\tx\n") is None
    assert parse_cap_sys_resource("CapEff:\tzz\n") is None


def test_parse_kernel_version() -> None:
    assert parse_kernel_version("6.1.0-18-amd64\n") == (6, 1)
    assert parse_kernel_version("5.19.17") == (5, 19)
    assert parse_kernel_version("unknown") is None


_MOUNT_PIECES = st.sampled_from(["cgroup2", "/sys", " ", "\n", "\\040", "\\", "rw,memory", "0", "é"])


@given(st.one_of(st.text(), st.lists(_MOUNT_PIECES, max_size=40).map("".join)))
def test_parse_mounts_raises_nothing_but_parse_errors(text: str) -> None:
    with contextlib.suppress(KernelParseError):
        parse_mounts(text, "fuzz")


_WORD = st.from_regex(r"[A-Za-z0-9_.=-]{1,12}", fullmatch=True)
_PATH = st.lists(
    st.text(alphabet=st.sampled_from("abc \t\\x"), min_size=1, max_size=8), min_size=1, max_size=3
).map(lambda parts: "/" + "/".join(parts))


def _escape(path: str) -> str:
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


@given(st.lists(st.tuples(_WORD, _PATH, _WORD, st.lists(_WORD, min_size=1, max_size=4)), max_size=8))
def test_generated_mounts_round_trip(entries: List[Tuple[str, str, str, List[str]]]) -> None:
    text = "".join(
        f"{src} {_escape(point)} {fstype} {','.join(opts)} 0 0\n" for src, point, fstype, opts in entries
    )
    assert parse_mounts(text) == tuple(
        Mount(src, point, fstype, tuple(opts)) for src, point, fstype, opts in entries
    )


def _host_has_hybrid_layout() -> bool:
    # Read the host's mount table directly, not through the code under test.
    try:
        with open("/proc/self/mounts") as f:
            fields = [line.split() for line in f]
    except OSError:
        return False
    v1_memory = any(f[2] == "cgroup" and "memory" in f[3].split(",") for f in fields if len(f) >= 4)
    has_cgroup2 = any(f[2] == "cgroup2" for f in fields if len(f) >= 4)
    return v1_memory and has_cgroup2 and os.path.exists("/proc/pressure/memory")


@pytest.mark.skipif(not _host_has_hybrid_layout(), reason="needs the dev host's hybrid cgroup layout and PSI")
def test_probe_on_the_real_host_reports_hybrid_and_the_trigger_windows_it_refuses() -> None:
    # Read-only apart from arming and dropping triggers on /proc/pressure/memory
    # (which writes no setting); nothing under /sys/fs/cgroup is opened for writing.
    caps = probe(KernelRoots())
    assert caps.layout == LAYOUT_HYBRID
    assert not caps.memory_controller_v2
    assert not caps.can_remediate_cgroups
    assert caps.psi_present
    assert caps.trigger is not None
    assert caps.short_window_trigger is not None
    if caps.cap_sys_resource is False and caps.kernel_version is not None and caps.kernel_version >= (6, 5):
        # Measured on the dev host (6.18, root without CAP_SYS_RESOURCE): a 1 s
        # window is refused with EINVAL, a 2 s window is accepted.
        assert not caps.short_window_trigger.accepted
        assert caps.short_window_trigger.errno == errno.EINVAL
        assert caps.trigger.accepted
        assert "only with windows that are multiples of 2 s" in caps.explanation()
    assert "hybrid layout" in caps.explanation()


def test_a_copied_tree_that_is_no_mount_is_read_as_a_v2_tree(kernel: FakeKernel) -> None:
    # A bug report's tarball replayed with --cgroup-root: no mount, but cgroup.controllers with memory.
    (kernel.proc_root / "self" / "mounts").write_text(
        "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"
    )
    caps = probe(kernel.roots)
    assert caps.cgroup_root_is_copy
    assert caps.memory_controller_v2
    assert "copied tree" in caps.explanation()


def test_a_plain_directory_without_cgroup_files_is_not_a_copied_tree(kernel: FakeKernel) -> None:
    (kernel.cgroup_root / "cgroup.controllers").unlink()
    (kernel.proc_root / "self" / "mounts").write_text("proc /proc proc rw 0 0\n")
    caps = probe(kernel.roots)
    assert not caps.cgroup_root_is_copy
    assert not caps.memory_controller_v2


def test_triggers_may_be_armed_only_on_a_cgroup2_mount_whose_probe_accepted_them(kernel: FakeKernel) -> None:
    kernel.add_seed()
    mounted = probe(kernel.roots, trigger_checker=ScriptedTriggers(accept_2s=True, accept_1s=False))
    assert mounted.cgroup_root_is_cgroup2 and mounted.triggers_may_be_armed
    refused = probe(kernel.roots, trigger_checker=ScriptedTriggers(accept_2s=False, accept_1s=False))
    assert not refused.triggers_may_be_armed
    # A copy (no mount): nothing is probed and nothing may be armed, whatever PSI files it holds.
    (kernel.proc_root / "self" / "mounts").write_text(
        "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"
    )
    copy = probe(kernel.roots)
    assert copy.cgroup_root_is_copy
    assert copy.trigger is None and not copy.triggers_may_be_armed
