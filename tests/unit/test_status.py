"""`remediator status` on the seed: the diagnosis the seed's engineer needed, in both forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remediator.cli import main
from remediator.text import UNSAFE
from tests.fakefs import FakeKernel

SEED = "system.slice/seed.service"
SEED_DIAGNOSIS = (
    "at its limit; 56 % of usage is page cache, most of it reclaimable; memory.high is unset, "
    "so the kernel goes straight from the limit to the OOM killer; full pressure 23.9 % in the last 10 s; "
    "1 OOM kill, memory.max hit 12 times"
)
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def seed_kernel(tmp_path: Path) -> FakeKernel:
    kernel = FakeKernel(tmp_path)
    kernel.add_seed(SEED)
    kernel.add_cgroup("init.scope", current=10 << 20)
    return kernel


def _argv(kernel: FakeKernel, *rest: str) -> list[str]:
    return [
        "--cgroup-root", str(kernel.cgroup_root), "--proc-root", str(kernel.proc_root),
        "--policies", str(REPO_POLICIES), "--config", str(kernel.base / "none.yaml"), *rest,
    ]  # fmt: skip


def test_status_prints_the_seed_diagnosis_with_binary_units(
    seed_kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_kernel.base / "none.yaml").write_text("{}\n")
    assert main(_argv(seed_kernel, "status")) == 0
    out = capsys.readouterr().out
    assert f"{SEED}: {SEED_DIAGNOSIS}\n" in out
    row = next(line for line in out.splitlines() if line.startswith(SEED + " "))
    cells = row.split()
    # current, max, high, anon, file ... as an SRE reads them.
    assert row.split("  ")[0] == SEED
    for figure in ("4.0 GiB", "max", "1.7 GiB", "2.2 GiB", "80.0 MiB", "42.2 MiB", "12.0 MiB", "0/12/1",
                   "78.20/41.11/12.02", "23.90/11.03/3.01", "services-cache"):  # fmt: skip
        assert figure in row, figure
    assert cells[-1] == "services-cache"
    # init.scope is excluded by the shipped policies, so the default selection leaves it out.
    assert "init.scope" not in out


def test_status_json_has_the_seed_figures_exactly(
    seed_kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_kernel.base / "none.yaml").write_text("{}\n")
    assert main(_argv(seed_kernel, "status", "--json", SEED)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "remediator.status/v1"
    (row,) = doc["cgroups"]
    assert row["cgroup"] == SEED
    assert row["memory"] == {"current": 4294836224, "max": 4294967296, "high": None, "min": 0, "low": 0}
    comp = row["composition"]
    assert comp["anon"] == 1824923648
    assert comp["file"] == 2387432448
    assert comp["shmem"] == 0
    assert comp["file_mapped"] == 83886080
    assert comp["file_dirty_writeback"] == 0
    assert comp["reclaimable_cache"] == 2387432448
    assert comp["slab"] == 44301312
    assert comp["kernel_stack"] == 12582912
    assert comp["sock"] == 1048576
    assert row["events"] == {"low": 0, "high": 0, "max": 12, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}
    assert row["pressure"]["full"] == {"avg10": 23.9, "avg60": 11.03, "avg300": 3.01, "total_us": 45112887}
    assert row["pressure"]["some"]["total_us"] == 183742991
    assert row["policies"] == ["services-cache"]
    assert row["diagnosis"] == SEED_DIAGNOSIS


def test_status_all_lists_every_memory_cgroup(
    seed_kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_kernel.base / "none.yaml").write_text("{}\n")
    assert main(_argv(seed_kernel, "status", "--all", "--json")) == 0
    names = [r["cgroup"] for r in json.loads(capsys.readouterr().out)["cgroups"]]
    assert names == ["init.scope", "system.slice", SEED]


def test_status_on_a_hybrid_layout_explains_it_and_shows_node_pressure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path)
    # As on the development hosts: the cgroup root is a tmpfs holding v1 hierarchies and an empty cgroup2.
    (kernel.proc_root / "self" / "mounts").write_text(
        f"tmpfs {kernel.cgroup_root} tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
    )
    kernel.set_pressure(
        None,
        "some avg10=1.50 avg60=0.50 avg300=0.10 total=99\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=7\n",
    )
    (tmp_path / "none.yaml").write_text("{}\n")
    assert main(_argv(kernel, "status")) == 0
    out = capsys.readouterr().out
    assert "hybrid layout" in out
    assert "only node-level pressure can be watched" in out
    assert "some 1.50/0.50/0.10, full 0.25/0.00/0.00" in out


def test_status_of_an_invalid_cgroup_name_is_a_usage_error(
    seed_kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_kernel.base / "none.yaml").write_text("{}\n")
    assert main(_argv(seed_kernel, "status", "../etc")) == 2
    assert "invalid cgroup name" in capsys.readouterr().err


SEED_TREE = Path(__file__).resolve().parents[1] / "fixtures" / "trees" / "seed"


def test_status_replays_a_copied_tree_from_a_bug_report(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--cgroup-root", str(SEED_TREE / "cgroup"), "--proc-root", str(SEED_TREE / "proc"),
            "--policies", str(REPO_POLICIES), "status", "--json", SEED]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["capabilities"]["cgroup_root_is_copy"] is True
    assert doc["cgroups"][0]["diagnosis"] == SEED_DIAGNOSIS


# ---- issue 12: what status says when there is nothing to show, and hostile names (items 6, 17) --------


def test_status_of_a_cgroup_that_never_existed_says_so_and_exits_1(
    seed_kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_kernel.base / "none.yaml").write_text("{}\n")
    assert main(_argv(seed_kernel, "status", "system.slice/nope.service")) == 1
    captured = capsys.readouterr()
    assert captured.err == "remediator: system.slice/nope.service: no such cgroup\n"
    assert "CGROUP" not in captured.out, "no table header without rows"
    assert "no cgroups selected" not in captured.out


def test_status_all_on_a_cgroup_root_that_does_not_exist_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path)
    (tmp_path / "none.yaml").write_text("{}\n")
    argv = _argv(kernel, "status", "--all")
    argv[argv.index("--cgroup-root") + 1] = str(tmp_path / "typo")
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"remediator: the cgroup root {tmp_path / 'typo'} is not a directory")


def test_status_of_a_named_cgroup_on_a_copied_tree_without_a_mount_table_exits_1(
    seed_kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_kernel.base / "none.yaml").write_text("{}\n")
    (seed_kernel.proc_root / "self" / "mounts").unlink()
    assert main(_argv(seed_kernel, "status", SEED)) == 1
    captured = capsys.readouterr()
    assert "The mount table could not be read" in captured.out
    assert (
        captured.err
        == f"remediator: {SEED}: cannot be read: no cgroup v2 memory controller here (see above)\n"
    )


def test_status_escapes_a_cgroup_name_that_would_overwrite_its_own_row(
    seed_kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    (seed_kernel.base / "none.yaml").write_text("{}\n")
    hostile = "system.slice/x\rSPOOFED: every cgroup healthy\x1b[2J\x9b\u202e\u2028.service"
    seed_kernel.add_cgroup(hostile, current=1 << 20)
    assert main(_argv(seed_kernel, "status", "--all")) == 0
    out = capsys.readouterr().out
    assert UNSAFE.search(out.replace("\n", "")) is None
    shown = "system.slice/x\\rSPOOFED: every cgroup healthy\\x1b[2J\\x9b\\u202e\\u2028.service"
    assert sum(line.startswith(shown) for line in out.splitlines()) == 2  # its row and its diagnosis
