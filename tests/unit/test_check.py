"""`remediator check`: exit 0 on the shipped policies, 1 with every located error on each broken one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from remediator.cli import main
from tests.fakefs import FakeKernel
from tests.unit.test_policy_broken_fixtures import BROKEN_DIR, EXPECTED

REPO = Path(__file__).resolve().parents[2]


def _argv(kernel: FakeKernel, policies: Path, *rest: str) -> list[str]:
    config = kernel.base / "remediator.yaml"
    config.write_text("{}\n")
    return [
        "--cgroup-root", str(kernel.cgroup_root), "--proc-root", str(kernel.proc_root),
        "--config", str(config), "--policies", str(policies), "check", *rest,
    ]  # fmt: skip


def test_check_accepts_the_shipped_policies_and_shows_what_they_select(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path)
    kernel.add_seed("system.slice/seed.service")
    kernel.add_cgroup("system.slice/remediator.service")
    kernel.add_cgroup(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-a.scope"
    )
    kernel.add_cgroup("kubepods/besteffort/pod2/c0ffee")
    assert main(_argv(kernel, REPO / "policies")) == 0
    out = capsys.readouterr().out
    assert "policy services-cache" in out
    assert "  selects: 3 cgroups now\n" in out
    for selected in (
        "system.slice/seed.service",
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-a.scope",
        "kubepods/besteffort/pod2/c0ffee",
    ):
        assert f"    {selected}\n" in out
    assert "system.slice/remediator.service" not in out
    assert "policy node-drop-caches (disabled)" in out
    assert "selects: the node (/proc/pressure/memory)" in out
    assert "ok: 3 policies valid in 3 files" in out


def test_check_accepts_the_shipped_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kernel = FakeKernel(tmp_path)
    argv = _argv(kernel, REPO / "policies")
    argv[argv.index("--config") + 1] = str(REPO / "packaging" / "etc" / "remediator.yaml")
    assert main(argv) == 0
    assert "mode: dry-run (audit)" in capsys.readouterr().out


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_check_rejects_each_broken_policy_with_its_exact_location(
    fixture: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    policies = tmp_path / "broken"
    policies.mkdir()
    shutil.copyfile(BROKEN_DIR / fixture, policies / fixture)
    assert main(_argv(kernel, policies)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[:-1] == EXPECTED[fixture]
    count = len(EXPECTED[fixture])
    assert err[-1] == f"{count} {'error' if count == 1 else 'errors'} in {policies}"


def test_check_with_a_missing_explicit_config_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path)
    argv = _argv(kernel, REPO / "policies")
    argv[argv.index("--config") + 1] = str(tmp_path / "nope.yaml")
    assert main(argv) == 1
    assert "nope.yaml" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert main([]) == 2


def test_a_policy_file_name_with_a_newline_stays_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copyfile(REPO / "policies" / "services-cache.yaml", policies / "x\nok: all is well.yaml")

    assert main(_argv(kernel, policies)) == 1

    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2  # the issue, then the count: the name did not start a line of its own
    assert "/x\\nok: all is well.yaml:1:1: (file): the policy name is the file's stem" in err[0]
    assert err[1] == f"1 error in {policies}"


def test_check_escapes_a_selected_cgroup_name_and_counts_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    kernel.add_cgroup("system.slice/x\x1b[2J\u202e\x9b.service")
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copyfile(REPO / "policies" / "services-cache.yaml", policies / "services-cache.yaml")

    assert main(_argv(kernel, policies)) == 0

    out = capsys.readouterr().out
    assert "    system.slice/x\\x1b[2J\\u202e\\x9b.service\n" in out
    assert "  selects: 1 cgroup now\n" in out
    assert out.endswith("ok: 1 policy valid in 1 file\n")
