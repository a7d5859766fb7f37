"""Trust: settings and policy files (and every directory above them) must be root's alone.

Whoever can write a policy decides what a root daemon writes to the kernel, so
a file that anyone but root could have written is refused, by ``check`` and
by ``run`` alike, with a located issue naming the file and its mode. The
development override exists, is explicit, and is never the default.

These tests run as root in CI (tests create files owned by root, mode 0644
under umask 022: trusted). The ones that need another owner use chown and
are skipped when not root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator, List

import pytest

from remediator.cli import main
from remediator.clock import FakeClock
from remediator.daemon.executor import Executor
from remediator.daemon.journal import CapturingWriter
from remediator.daemon.kernel_files import KernelFiles
from remediator.daemon.notify import Notifier
from remediator.daemon.service import Service, StartRefused
from remediator.daemon.state_store import StateStore
from remediator.daemon.watcher import Watcher
from remediator.kernel.capabilities import probe
from remediator.kernel.psi_trigger import TriggerCheck
from remediator.policy.loader import load_policy_dir, load_policy_file
from remediator.records import RecordType
from remediator.settings import Settings, SettingsError, load_settings
from remediator.trust import OVERRIDE_ENV, OVERRIDE_SETTING, check_directory, check_file
from tests.fake_triggers import FakeTriggers
from tests.fakefs import FakeKernel

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534

POLICY = """\
target: {kind: cgroups, include: ["system.slice/*.service"]}
trigger: {pressure: full, stall_ms: 100, window_ms: 2000}
actions: [{kind: reclaim}]
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A policies directory as a package or a git checkout under umask 022 leaves it: 0755 / 0644."""
    directory = tmp_path / "etc" / "policies.d"
    directory.mkdir(parents=True)
    for level in (tmp_path / "etc", directory):
        level.chmod(0o755)
    (directory / "web.yaml").write_text(POLICY)
    (directory / "web.yaml").chmod(0o644)
    return directory


def issue_lines(directory: Path, allow_untrusted: bool = False) -> List[str]:
    return [str(issue) for issue in load_policy_dir(directory, allow_untrusted=allow_untrusted).issues]


# ---- the rule ------------------------------------------------------------------


def test_root_owned_0644_file_in_0755_directories_is_trusted(policies: Path) -> None:
    assert check_file(policies / "web.yaml") is None
    assert check_directory(policies) is None
    policy_set = load_policy_dir(policies)
    assert policy_set.issues == []
    assert [p.name for p in policy_set.policies] == ["web"]


@pytest.mark.parametrize(
    ("mode", "writers"),
    [(0o664, "group"), (0o646, "others"), (0o666, "group and others")],
    ids=["0664", "0646", "0666"],
)
def test_policy_file_writable_by_others_is_refused_naming_file_and_mode(
    policies: Path, mode: int, writers: str
) -> None:
    path = policies / "web.yaml"
    path.chmod(mode)

    policy_set = load_policy_dir(policies)

    assert policy_set.policies == ()
    [line] = [str(issue) for issue in policy_set.issues]
    assert line.startswith("policies.d/web.yaml:1:1: (file): not trusted: ")
    assert f"{path} (mode {mode:04o}, owner uid {os.geteuid()}) is writable by {writers}" in line
    assert OVERRIDE_SETTING in line


@needs_root
def test_policy_file_owned_by_another_user_is_refused(policies: Path) -> None:
    path = policies / "web.yaml"
    os.chown(path, NOBODY, NOBODY)

    [line] = issue_lines(policies)

    assert f"{path} (mode 0644, owner uid {NOBODY}) is owned by uid {NOBODY}, not by root" in line


def test_owner_outside_the_trusted_set_is_refused(policies: Path) -> None:
    # The same rule without chown: as if the daemon's user and root were someone else.
    untrusted = check_file(policies / "web.yaml", owners=frozenset({NOBODY}))

    assert untrusted is not None
    assert untrusted.culprit == policies / "web.yaml"
    assert "not by root" in untrusted.reason


def test_group_writable_policy_directory_refuses_every_policy_in_it(policies: Path) -> None:
    (policies / "db.yaml").write_text(POLICY)
    policies.chmod(0o775)

    policy_set = load_policy_dir(policies)

    assert policy_set.policies == ()
    [line] = [str(issue) for issue in policy_set.issues]
    assert line.startswith(f"{policies}:1:1: (file): not trusted: {policies} (mode 0775")
    assert "is writable by group" in line


def test_sticky_world_writable_policy_directory_is_still_refused(policies: Path) -> None:
    # Sticky or not, anyone could drop a new policy file into it.
    policies.chmod(0o1777)

    [line] = issue_lines(policies)

    assert f"{policies} (mode 1777" in line


def test_writable_directory_above_the_file_is_refused(policies: Path) -> None:
    # Whoever can write etc/ can rename policies.d away and put their own in its place.
    above = policies.parent
    above.chmod(0o777)

    file_problem = check_file(policies / "web.yaml")
    [line] = issue_lines(policies)

    assert file_problem is not None
    assert file_problem.culprit == above
    assert f"directory {above} (mode 0777" in line


def test_sticky_world_writable_directory_above_is_accepted(policies: Path) -> None:
    # /tmp-style: only an entry's owner (root) may rename or remove it.
    policies.parent.chmod(0o1777)

    assert issue_lines(policies) == []


def test_settings_file_directory_must_not_be_sticky_writable_either(tmp_path: Path) -> None:
    directory = tmp_path / "etc"
    directory.mkdir(mode=0o755)
    config = directory / "remediator.yaml"
    config.write_text("dry_run: true\n")
    directory.chmod(0o1777)

    problem = check_file(config)

    assert problem is not None
    assert problem.culprit == directory


def test_symlinked_policy_is_judged_by_the_file_it_points_to(policies: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    target = elsewhere / "evil.yaml"
    target.write_text(POLICY)
    target.chmod(0o666)
    os.symlink(target, policies / "evil.yaml")

    lines = issue_lines(policies)

    assert len(lines) == 1
    assert lines[0].startswith("policies.d/evil.yaml:1:1: (file): not trusted: ")
    assert f"{target} (mode 0666" in lines[0]


def test_single_policy_file_load_applies_the_same_check(policies: Path) -> None:
    (policies / "web.yaml").chmod(0o666)

    policy, issues = load_policy_file(policies / "web.yaml")

    assert policy is None
    assert "not trusted" in str(issues[0])


def test_missing_file_is_left_to_the_caller(tmp_path: Path) -> None:
    assert check_file(tmp_path / "absent.yaml") is None


def test_the_repository_policies_and_fixtures_are_trusted_in_this_checkout() -> None:
    # A fresh clone under umask 022 is 0644/0755: CI must keep loading them.
    for directory in (REPO / "policies", REPO / "tests" / "fixtures" / "policies" / "valid"):
        assert check_directory(directory) is None, directory
        for path in sorted(directory.glob("*.yaml")):
            assert check_file(path) is None, path


# ---- the override ----------------------------------------------------------------


def test_override_is_off_by_default_and_in_the_packaged_settings() -> None:
    assert Settings().insecure_allow_untrusted_files is False
    packaged = load_settings(REPO / "packaging" / "etc" / "remediator.yaml", True, {}, {})
    assert packaged.insecure_allow_untrusted_files is False


def test_override_loads_an_untrusted_policy(policies: Path) -> None:
    (policies / "web.yaml").chmod(0o666)

    assert issue_lines(policies, allow_untrusted=True) == []


# ---- settings ----------------------------------------------------------------------


def _config(tmp_path: Path, text: str, mode: int) -> Path:
    directory = tmp_path / "etc"
    directory.mkdir(mode=0o755, exist_ok=True)
    path = directory / "remediator.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_group_writable_settings_file_is_refused_naming_file_and_mode(tmp_path: Path) -> None:
    config = _config(tmp_path, "dry_run: false\n", 0o620)

    with pytest.raises(SettingsError) as caught:
        load_settings(config, True, {}, {})

    [line] = [str(issue) for issue in caught.value.issues]
    assert line.startswith(f"{config}:1:1: (file): not trusted: {config} (mode 0620")


def test_untrusted_default_settings_file_is_refused_too(tmp_path: Path) -> None:
    # Not named explicitly, but present: it would be believed, so it is checked.
    config = _config(tmp_path, "dry_run: false\n", 0o666)

    with pytest.raises(SettingsError):
        load_settings(config, False, {}, {})


def test_environment_override_excuses_the_settings_file(tmp_path: Path) -> None:
    config = _config(tmp_path, "rescan_interval_sec: 20\n", 0o666)

    settings = load_settings(config, True, {}, {OVERRIDE_ENV: "1"})

    assert settings.rescan_interval_sec == 20
    assert settings.insecure_allow_untrusted_files is True


def test_flag_override_excuses_the_settings_file(tmp_path: Path) -> None:
    config = _config(tmp_path, "rescan_interval_sec: 20\n", 0o666)

    assert load_settings(config, True, {OVERRIDE_SETTING: True}, {}).rescan_interval_sec == 20


def test_untrusted_settings_file_cannot_vouch_for_itself(tmp_path: Path) -> None:
    config = _config(tmp_path, f"{OVERRIDE_SETTING}: true\n", 0o666)

    with pytest.raises(SettingsError) as caught:
        load_settings(config, True, {}, {})

    assert "not trusted" in str(caught.value)


def test_override_in_a_trusted_settings_file_applies_to_policies(tmp_path: Path) -> None:
    config = _config(tmp_path, f"{OVERRIDE_SETTING}: true\n", 0o644)

    assert load_settings(config, True, {}, {}).insecure_allow_untrusted_files is True


# ---- check and run -------------------------------------------------------------------


def test_check_refuses_an_untrusted_policy_with_its_mode(
    tmp_path: Path, policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    (policies / "web.yaml").chmod(0o664)
    config = _config(tmp_path, "{}\n", 0o644)
    argv = ["--cgroup-root", str(kernel.cgroup_root), "--proc-root", str(kernel.proc_root),
            "--config", str(config), "--policies", str(policies), "check"]  # fmt: skip

    assert main(argv) == 1

    err = capsys.readouterr().err
    assert f"policies.d/web.yaml:1:1: (file): not trusted: {policies / 'web.yaml'} (mode 0664" in err


def test_check_and_status_load_an_untrusted_policy_like_run_when_the_override_is_set(
    tmp_path: Path, policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = FakeKernel(tmp_path / "kernel")
    (policies / "web.yaml").chmod(0o664)
    config = _config(tmp_path, "insecure_allow_untrusted_files: true\n", 0o644)
    common = ["--cgroup-root", str(kernel.cgroup_root), "--proc-root", str(kernel.proc_root),
              "--config", str(config), "--policies", str(policies)]  # fmt: skip

    assert main([*common, "check"]) == 0
    err = capsys.readouterr().err
    assert "warning: insecure_allow_untrusted_files is set" in err
    assert "not trusted" not in err

    main([*common, "status"])
    assert "not trusted" not in capsys.readouterr().err


def test_run_refuses_with_an_untrusted_settings_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "dry_run: true\n", 0o666)

    assert main(["--config", str(config), "run", "--once"]) == 1

    assert f"{config} (mode 0666" in capsys.readouterr().err


class RunRig:
    """The daemon on a fake kernel, started with the given policies directory."""

    def __init__(self, base: Path, policies: Path, allow_untrusted: bool = False) -> None:
        self.kernel = FakeKernel(base / "kernel")
        self.kernel.add_cgroup("system.slice/web.service", current=1 << 30, max_bytes=2 << 30)
        self.triggers = FakeTriggers(self.kernel.roots)
        self.writer = CapturingWriter()
        clock = FakeClock()
        settings = load_settings(
            None,
            False,
            {
                "cgroup_root": self.kernel.cgroup_root,
                "proc_root": self.kernel.proc_root,
                "policies_dir": policies,
                "state_file": base / "run" / "state.json",
                OVERRIDE_SETTING: allow_untrusted,
            },
            environ={},
        )
        roots = self.kernel.roots
        watcher = Watcher(roots, clock, 2.0, arm=self.triggers.arm, poll_factory=self.triggers.poll_factory)
        self.service = Service(
            settings=settings, clock=clock, writer=self.writer, notifier=Notifier(environ={}),
            executor=Executor(KernelFiles.under(roots), StateStore(settings.state_file), clock),
            watcher=watcher,
            capabilities=probe(roots, trigger_checker=lambda _p, _s: TriggerCheck(True, "", None)),
        )  # fmt: skip

    def of(self, kind: RecordType) -> List[str]:
        return [r.message for r in self.writer.records if r.type == kind]


@pytest.fixture
def run_rig(tmp_path: Path, policies: Path) -> Iterator[RunRig]:
    (policies / "web.yaml").chmod(0o666)
    rig = RunRig(tmp_path, policies)
    yield rig
    rig.service.watcher.close()
    rig.triggers.close()


def test_run_rejects_an_untrusted_policy_with_a_record_and_watches_nothing_for_it(run_rig: RunRig) -> None:
    # No valid set was ever run here, so there is none to fall back to: the start is refused.
    with pytest.raises(StartRefused, match="no last valid policy set"):
        run_rig.service.start()

    [rejected] = run_rig.of(RecordType.POLICY_REJECTED)
    assert "policies.d/web.yaml:1:1: (file): not trusted: " in rejected
    assert "(mode 0666" in rejected
    assert run_rig.of(RecordType.POLICY_LOADED) == []
    assert run_rig.triggers.live("system.slice/web.service") == []


def test_reload_keeps_running_policies_when_a_file_becomes_untrusted(tmp_path: Path, policies: Path) -> None:
    rig = RunRig(tmp_path, policies)
    try:
        rig.service.start()
        assert len(rig.triggers.live("system.slice/web.service")) == 1
        (policies / "web.yaml").chmod(0o666)

        rig.service.reload()

        assert any("not trusted" in m for m in rig.of(RecordType.POLICY_REJECTED))
        assert list(rig.service.policies) == ["web"]
        assert len(rig.triggers.live("system.slice/web.service")) == 1
    finally:
        rig.service.watcher.close()
        rig.triggers.close()


def test_run_with_the_override_loads_the_untrusted_policy(tmp_path: Path, policies: Path) -> None:
    (policies / "web.yaml").chmod(0o666)
    rig = RunRig(tmp_path, policies, allow_untrusted=True)
    try:
        rig.service.start()
        assert rig.of(RecordType.POLICY_REJECTED) == []
        assert len(rig.triggers.live("system.slice/web.service")) == 1
    finally:
        rig.service.watcher.close()
        rig.triggers.close()


def test_copied_policies_keep_their_trusted_modes(tmp_path: Path) -> None:
    # shutil.copytree keeps modes: the other tests' copies of policies/ stay trusted.
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "policies", copy)
    assert issue_lines(copy) == []


def test_a_start_with_an_invalid_policy_runs_the_last_valid_set_degraded(
    tmp_path: Path, policies: Path
) -> None:
    first = RunRig(tmp_path / "first", policies)
    first.service.start()  # a valid set runs, and is kept
    first.service.watcher.close()
    first.triggers.close()
    kept_dir = tmp_path / "first" / "run" / "last-valid-policies"
    assert sorted(p.name for p in kept_dir.iterdir()) == ["web.yaml"]

    (policies / "web.yaml").chmod(0o666)  # now the directory's set is invalid
    again = RunRig(tmp_path / "first", policies)
    again.service.start()
    try:
        [degraded] = [m for m in again.of(RecordType.POLICY_REJECTED) if "DEGRADED" in m]
        assert "last valid set kept in" in degraded
        assert again.of(RecordType.POLICY_LOADED) == []  # the directory's records: nothing loaded from it
        assert again.service.status_text().startswith(
            "DEGRADED: running the last valid policies; policies.d/web.yaml:1:1: (file): not trusted"
        )
        assert list(again.service.policies) == ["web"]
        assert again.triggers.live("system.slice/web.service") != []
    finally:
        again.service.watcher.close()
        again.triggers.close()
