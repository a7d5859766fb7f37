"""The .rpm (RHEL 9): metadata, requirements, file list and %config(noreplace), rpmlint, and an install
into an empty root (dependencies are not resolvable on this Debian host), with and without scriptlets."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from tests.packaging.conftest import EXPECTED, REPO_ROOT, STUB_SCRIPT, make_script_root, script_calls
from tests.packaging.host_tools import require_commands

SHIPPED_POLICIES = sorted(path.name for path in (REPO_ROOT / "policies").glob("*.yaml"))
CONFIG_FILES = sorted(
    ["/etc/remediator/remediator.yaml"] + [f"/etc/remediator/policies.d/{name}" for name in SHIPPED_POLICIES]
)
RPMLINT_CONFIG = REPO_ROOT / "packaging" / "rpmlint" / "remediator.toml"
# Debian's rpm keeps its database under $HOME; inside a test root, use RHEL's place.
DBPATH = "/var/lib/rpm"


def rpm(*args: str) -> str:
    require_commands("rpm")
    completed = subprocess.run(["rpm", *args], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


@pytest.fixture
def rhel9(built_packages: Dict[str, Path]) -> Path:
    return built_packages["rhel9"]


def file_flags(package: Path) -> Dict[str, str]:
    """path -> rpm's file flags (c config, n noreplace, d doc, l license, ...)."""
    flags: Dict[str, str] = {}
    for line in rpm("-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", str(package)).splitlines():
        flag, _, path = line.rpartition(" ")
        flags[path] = flag.strip()
    return flags


def test_rpm_names_version_and_release_for_rhel9(rhel9: Path) -> None:
    info = rpm("-qpi", str(rhel9))
    assert "Name        : remediator" in info
    assert "Release     : 1.el9" in info
    assert "Architecture: x86_64" in info


def test_rpm_requires_the_rhel9_python_abi_and_the_distribution_libraries(rhel9: Path) -> None:
    requires = [line.strip() for line in rpm("-qpR", str(rhel9)).splitlines()]
    assert f"python(abi) = {EXPECTED['rhel9'].python}" in requires
    assert "python3-systemd" in requires
    assert "python3-pyyaml" in requires
    assert not [item for item in requires if "pydantic" in item or "tenacity" in item], requires


def test_rpm_recommends_node_exporter_as_a_weak_dependency(rhel9: Path) -> None:
    recommends = [line.strip() for line in rpm("-qp", "--recommends", str(rhel9)).splitlines()]

    assert recommends == ["golang-github-prometheus-node-exporter"]
    assert "golang-github-prometheus-node-exporter" not in rpm("-qpR", str(rhel9))


def test_rpm_marks_settings_and_policies_config_noreplace(rhel9: Path) -> None:
    flags = file_flags(rhel9)
    config = sorted(path for path, flag in flags.items() if "c" in flag)
    assert config == CONFIG_FILES
    assert all(flags[path] == "cn" for path in CONFIG_FILES), {path: flags[path] for path in CONFIG_FILES}
    assert flags["/usr/share/man/man8/remediator.8.gz"] == "d"
    assert flags["/usr/share/man/man5/remediator-policy.5.gz"] == "d"
    assert flags["/usr/share/licenses/remediator/copyright"] == "l"


def test_rpm_file_list_has_the_app_for_python39_the_unit_and_the_catalog(rhel9: Path) -> None:
    files = rpm("-qpl", str(rhel9)).split()
    for path in (
        "/usr/bin/remediator",
        "/usr/lib/remediator/remediator/cli.py",
        "/usr/lib/systemd/system/remediator.service",
        "/usr/lib/systemd/system/remediator.slice",
        "/usr/lib/systemd/catalog/remediator.catalog",
        "/usr/share/doc/remediator/README.md",
        "/usr/share/remediator/remediator-rules.yml",
        "/usr/lib/remediator/prometheus_client/__init__.py",
        # Owned, so an erase removes them.
        "/etc/remediator",
        "/etc/remediator/policies.d",
        "/usr/lib/remediator",
    ):
        assert path in files, path
    extension = [path for path in files if path.endswith(".so")]
    assert len(extension) == 1 and "cpython-39-x86_64" in extension[0], extension
    assert not [path for path in files if path.endswith(".pyc")]


def test_rpm_requires_systemd_for_its_post_scriptlet(rhel9: Path) -> None:
    # %post runs `systemctl preset` (as %systemd_post does): Requires(post), so rpm orders systemd first.
    flags = rpm("-qp", "--qf", "[%{REQUIRENAME} %{REQUIREFLAGS:deptype}\n]", str(rhel9)).splitlines()

    assert "systemd post" in flags


def test_rpm_description_is_the_text_without_the_summary_or_debian_paragraph_marks(rhel9: Path) -> None:
    summary = rpm("-qp", "--qf", "%{SUMMARY}", str(rhel9))
    description = rpm("-qp", "--qf", "%{DESCRIPTION}", str(rhel9))
    source = (REPO_ROOT / "packaging" / "description.txt").read_text().strip()

    assert summary == source.splitlines()[0]
    assert description == source.partition("\n")[2]
    assert description.startswith("remediator is a node daemon")
    assert "\n.\n" not in description and "\n\nThe package bundles" in description


def test_rpm_scriptlets_guard_starts_and_stop_on_erase(rhel9: Path) -> None:
    scripts = rpm("-qp", "--scripts", str(rhel9))
    for scriptlet in ("postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"):
        assert scriptlet in scripts
    assert "[ -d /run/systemd/system ]" in scripts


def test_rpm_passes_rpmlint(rhel9: Path) -> None:
    require_commands("rpmlint")
    completed = subprocess.run(
        ["rpmlint", "-c", str(RPMLINT_CONFIG), str(rhel9)], capture_output=True, text=True, check=False
    )
    findings = [line for line in completed.stdout.splitlines() if line.startswith("remediator")]
    # Every finding is fixed or filtered with a reason in packaging/rpmlint/remediator.toml.
    assert completed.returncode == 0 and not findings, completed.stdout + completed.stderr
    assert "0 errors, 0 warnings" in completed.stdout, completed.stdout


# --------------------------------------------------------------------------- installed into a root


def rpm_in_root(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    require_commands("rpm")
    return subprocess.run(
        ["rpm", f"--root={root}", f"--dbpath={DBPATH}", *args], capture_output=True, text=True, check=False
    )


def install(root: Path, package: Path, *options: str) -> None:
    (root / DBPATH.lstrip("/")).mkdir(parents=True, exist_ok=True)
    rpm_in_root(root, "--initdb")
    # --nodeps: python3, python3-systemd ... are RHEL packages this host cannot provide.
    completed = rpm_in_root(root, "-i", "--nodeps", *options, str(package))
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_rpm_installs_into_an_empty_root(tmp_path: Path, rhel9: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, rhel9, "--noscripts")
    assert (root / "usr/bin/remediator").stat().st_mode & 0o777 == 0o755
    assert (root / "usr/lib/systemd/system/remediator.service").is_file()
    assert (root / "etc/remediator/remediator.yaml").read_text().count("\ndry_run: true\n") == 1
    configs = rpm_in_root(root, "-qc", "remediator").stdout.split()
    assert sorted(configs) == CONFIG_FILES
    verify = rpm_in_root(root, "-V", "--nodeps", "remediator")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_rpm_reinstall_keeps_an_edited_policy(tmp_path: Path, rhel9: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, rhel9, "--noscripts")
    policy = root / "etc/remediator/policies.d/node.yaml"
    edited = policy.read_text() + "# edited by the administrator\n"
    policy.write_text(edited)
    completed = rpm_in_root(root, "-i", "--nodeps", "--noscripts", "--replacepkgs", str(rhel9))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert policy.read_text() == edited


def test_rpm_first_install_leaves_enabling_to_the_presets_and_starts_nothing(
    tmp_path: Path, rhel9: Path
) -> None:
    # As %systemd_post: `systemctl preset` (RHEL 9's default preset disables what it does not list),
    # never `systemctl enable`, never a start; works in a chroot (no /run/systemd/system).
    root = make_script_root(tmp_path / "root")
    install(root, rhel9)
    calls = script_calls(root)
    assert "systemctl --no-reload preset remediator.service" in calls
    assert not [call for call in calls if " enable" in call or "start" in call], calls
    assert "python3 -I -m compileall -q -j 1 /usr/lib/remediator" in calls


def test_rpm_first_install_uses_systemds_update_helper_where_there_is_one(
    tmp_path: Path, rhel9: Path
) -> None:
    # systemd 252 (RHEL 9) ships the helper %systemd_post calls; it applies the presets itself.
    root = make_script_root(tmp_path / "root")
    helper = root / "usr/lib/systemd/systemd-update-helper"
    helper.parent.mkdir(parents=True)
    helper.write_text(STUB_SCRIPT)
    helper.chmod(0o755)
    install(root, rhel9)
    calls = script_calls(root)
    assert "systemd-update-helper install-system-units remediator.service" in calls
    assert not [call for call in calls if call.startswith("systemctl") and "preset" in call], calls


def test_rpm_install_on_a_running_systemd_reloads_units_and_starts_nothing(
    tmp_path: Path, rhel9: Path
) -> None:
    root = make_script_root(tmp_path / "root")
    (root / "run/systemd/system").mkdir(parents=True)
    install(root, rhel9)
    calls = script_calls(root)
    assert "systemctl daemon-reload" in calls
    assert not [call for call in calls if "start" in call], calls


def test_rpm_erase_stops_the_service_and_keeps_edited_configuration_aside(
    tmp_path: Path, rhel9: Path
) -> None:
    root = make_script_root(tmp_path / "root")
    install(root, rhel9)
    (root / "calls.log").unlink()
    compiled = root / "usr/lib/remediator/remediator/__pycache__/cli.cpython-39.pyc"
    compiled.parent.mkdir()
    compiled.write_bytes(b"as the %post's compileall would leave it")
    policy = root / "etc/remediator/policies.d/node.yaml"
    policy.write_text(policy.read_text() + "# edited\n")
    completed = rpm_in_root(root, "-e", "remediator")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    calls: List[str] = script_calls(root)
    assert calls[0] == "systemctl --no-reload disable --now remediator.service", calls
    assert not (root / "usr/lib/remediator").exists()
    # rpm keeps an edited %config file as .rpmsave; unedited ones go.
    assert (root / "etc/remediator/policies.d/node.yaml.rpmsave").is_file()
    assert not (root / "etc/remediator/remediator.yaml").exists()
