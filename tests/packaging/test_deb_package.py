"""The .deb packages: metadata, file list, conffiles, lintian, and the maintainer scripts run by dpkg.

The maintainer scripts run for real (dpkg --root) in an almost empty root like a build chroot, with
systemctl and friends replaced by stubs that log their arguments (conftest.make_script_root).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from tests.packaging.conftest import DEB_TARGETS, EXPECTED, REPO_ROOT, make_script_root, script_calls
from tests.packaging.host_tools import require_commands

SHIPPED_POLICIES = sorted(path.name for path in (REPO_ROOT / "policies").glob("*.yaml"))
LOCK_DIR = REPO_ROOT / "packaging" / "requirements"

REQUIRED_PATHS = (
    "/usr/bin/remediator",
    "/usr/lib/remediator/remediator/__init__.py",
    "/usr/lib/remediator/remediator/cli.py",
    "/usr/lib/remediator/pydantic/__init__.py",
    "/usr/lib/remediator/pydantic_settings/__init__.py",
    "/usr/lib/remediator/tenacity/__init__.py",
    "/usr/lib/remediator/prometheus_client/__init__.py",
    "/usr/share/remediator/remediator-rules.yml",
    "/usr/lib/systemd/system/remediator.service",
    "/usr/lib/systemd/system/remediator.slice",
    "/usr/lib/systemd/catalog/remediator.catalog",
    "/etc/remediator/remediator.yaml",
    "/usr/share/man/man8/remediator.8.gz",
    "/usr/share/man/man5/remediator-policy.5.gz",
    "/usr/share/doc/remediator/README.md",
    "/usr/share/doc/remediator/copyright",
    "/usr/share/doc/remediator/changelog.Debian.gz",
)


def dpkg_deb(*args: str) -> str:
    require_commands("dpkg-deb")
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


def listing(package: Path) -> Dict[str, str]:
    """path -> "mode owner" from `dpkg-deb -c`."""
    entries: Dict[str, str] = {}
    for line in dpkg_deb("-c", str(package)).splitlines():
        fields = line.split()
        path = fields[5].lstrip(".").rstrip("/") or "/"
        entries[path] = f"{fields[0]} {fields[1]}"
    return entries


def test_deb_description_is_the_summary_then_the_text_with_debian_paragraph_marks(
    built_packages: Dict[str, Path],
) -> None:
    description = dpkg_deb("-f", str(built_packages["debian12"]), "Description")
    source = (REPO_ROOT / "packaging" / "description.txt").read_text().strip()

    assert description.splitlines()[0] == source.splitlines()[0]
    assert description.splitlines()[1:] == [f" {line}" if line else " ." for line in source.splitlines()[1:]]


@pytest.mark.parametrize("target", DEB_TARGETS)
def test_deb_version_carries_the_target(target: str, built_packages: Dict[str, Path]) -> None:
    version = dpkg_deb("-f", str(built_packages[target]), "Version").strip()
    assert version.endswith(f"~{target.replace('ubuntu2404', 'ubuntu24.04')}"), version
    assert dpkg_deb("-f", str(built_packages[target]), "Architecture").strip() == "amd64"


@pytest.mark.parametrize("target", DEB_TARGETS)
def test_deb_depends_on_the_target_python_and_the_distribution_libraries(
    target: str, built_packages: Dict[str, Path]
) -> None:
    python = EXPECTED[target].python
    major, minor = python.split(".")
    depends = [item.strip() for item in dpkg_deb("-f", str(built_packages[target]), "Depends").split(",")]
    # Exactly the python3 the bundled pydantic-core is compiled for: a newer python3 must not satisfy it.
    assert f"python3 (>= {python}~)" in depends
    assert f"python3 (<< {major}.{int(minor) + 1})" in depends
    assert "python3-systemd" in depends
    assert "python3-yaml" in depends
    assert "init-system-helpers (>= 1.54~)" in depends, "the maintainer scripts call deb-systemd-helper"
    bundled_by_us = [item for item in depends if re.match(r"python3-(pydantic|tenacity)", item)]
    assert not bundled_by_us, f"the distribution's versions are too old; they are bundled: {bundled_by_us}"


@pytest.mark.parametrize("target", DEB_TARGETS)
def test_deb_recommends_node_exporter_which_serves_the_metrics_file(
    target: str, built_packages: Dict[str, Path]
) -> None:
    recommends = dpkg_deb("-f", str(built_packages[target]), "Recommends").split(",")

    assert [item.strip() for item in recommends] == ["prometheus-node-exporter"]


@pytest.mark.parametrize("target", DEB_TARGETS)
def test_deb_ships_the_alert_rules_as_checked_in(
    target: str, built_packages: Dict[str, Path], tmp_path: Path
) -> None:
    dpkg_deb("-x", str(built_packages[target]), str(tmp_path))

    shipped = tmp_path / "usr/share/remediator/remediator-rules.yml"
    assert shipped.read_bytes() == (REPO_ROOT / "packaging/prometheus/remediator-rules.yml").read_bytes()


@pytest.mark.parametrize("target", DEB_TARGETS)
def test_deb_conffiles_are_the_settings_and_every_shipped_policy(
    target: str, built_packages: Dict[str, Path]
) -> None:
    conffiles = sorted(dpkg_deb("-I", str(built_packages[target]), "conffiles").split())
    expected = sorted(
        ["/etc/remediator/remediator.yaml"]
        + [f"/etc/remediator/policies.d/{name}" for name in SHIPPED_POLICIES]
    )
    assert conffiles == expected


@pytest.mark.parametrize("target", DEB_TARGETS)
def test_deb_installs_the_expected_files_for_its_python(target: str, built_packages: Dict[str, Path]) -> None:
    files = listing(built_packages[target])
    missing = [path for path in REQUIRED_PATHS if path not in files]
    assert not missing, f"missing from the package: {missing}"
    for policy in SHIPPED_POLICIES:
        assert f"/etc/remediator/policies.d/{policy}" in files
    extension = [path for path in files if path.endswith(".so")]
    assert len(extension) == 1 and EXPECTED[target].python_tag in extension[0], extension
    assert files["/usr/bin/remediator"] == "-rwxr-xr-x root/root"
    assert all(owner.endswith("root/root") for owner in files.values())
    # Byte code is compiled on the node (postinst) for the Python there; console scripts of the wheels
    # (built for the build host's interpreter) are not shipped.
    assert not [path for path in files if path.endswith(".pyc") or "__pycache__" in path]
    assert not [path for path in files if path.startswith("/usr/lib/remediator/bin")]


@pytest.mark.parametrize("target", DEB_TARGETS)
def test_deb_bundles_exactly_the_locked_libraries(target: str, built_packages: Dict[str, Path]) -> None:
    locked = set()
    for line in (LOCK_DIR / f"{target}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("==")
            locked.add(f"{name.replace('-', '_')}-{rest.split()[0]}")
    bundled = {
        re.sub(r"\.dist-info$", "", path.split("/")[4]).lower()
        for path in listing(built_packages[target])
        if re.match(r"/usr/lib/remediator/[^/]+\.dist-info$", path)
    }
    assert bundled == locked


@pytest.mark.parametrize("target", DEB_TARGETS)
def test_deb_passes_lintian(target: str, built_packages: Dict[str, Path]) -> None:
    require_commands("lintian")
    completed = subprocess.run(
        [
            "lintian",
            "--display-info",
            "--pedantic",
            # Info and pedantic findings are caught from the output below (lintian 2.116 exits 2 with
            # --fail-on info even when every info tag is overridden).
            "--fail-on",
            "error,warning",
            str(built_packages[target]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = [
        line for line in (completed.stdout + completed.stderr).splitlines() if re.match(r"^[EWIPX]: ", line)
    ]
    # Every finding (pedantic ones too) is fixed or overridden with a reason in packaging/lintian/remediator.
    assert completed.returncode == 0 and not findings, "\n".join(findings) or completed.stderr


# --------------------------------------------------------------------------- maintainer scripts


def dpkg_in_root(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    require_commands("dpkg-deb")
    return subprocess.run(
        # --force-depends: python3 and friends are not in this root (the scripts' python3 is a stub).
        ["dpkg", f"--root={root}", "--force-depends", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def install_in_root(root: Path, package: Path) -> List[str]:
    completed = dpkg_in_root(root, "-i", str(package))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return script_calls(root)


@pytest.fixture
def debian12(built_packages: Dict[str, Path]) -> Path:
    return built_packages["debian12"]


def test_deb_install_in_a_build_chroot_enables_the_service_without_starting_it(
    tmp_path: Path, debian12: Path
) -> None:
    root = make_script_root(tmp_path / "root")
    calls = install_in_root(root, debian12)
    assert "deb-systemd-helper enable remediator.service" in calls
    assert not [call for call in calls if call.startswith(("deb-systemd-invoke", "systemctl"))], calls
    assert "python3 -I -m compileall -q -j 1 /usr/lib/remediator" in calls
    assert "journalctl --update-catalog" in calls


def test_deb_install_on_a_system_running_systemd_starts_the_service(tmp_path: Path, debian12: Path) -> None:
    root = make_script_root(tmp_path / "root")
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    calls = install_in_root(root, debian12)
    assert "systemctl --system daemon-reload" in calls
    assert "deb-systemd-invoke start remediator.service" in calls


def test_deb_upgrade_restarts_instead_of_starting(tmp_path: Path, debian12: Path) -> None:
    root = make_script_root(tmp_path / "root")
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    install_in_root(root, debian12)
    (root / "calls.log").unlink()
    calls = install_in_root(root, debian12)
    assert "deb-systemd-invoke restart remediator.service" in calls


def test_deb_remove_stops_the_service_first_and_keeps_the_configuration(
    tmp_path: Path, debian12: Path
) -> None:
    root = make_script_root(tmp_path / "root")
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    install_in_root(root, debian12)
    compiled = root / "usr/lib/remediator/remediator/__pycache__/cli.cpython-311.pyc"
    compiled.parent.mkdir()
    compiled.write_bytes(b"as the postinst's compileall would leave it")
    (root / "calls.log").unlink()
    completed = dpkg_in_root(root, "--remove", "remediator")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    calls = script_calls(root)
    # SIGTERM makes the daemon restore every value it changed, before its files go.
    assert calls[0] == "deb-systemd-invoke stop remediator.service", calls
    assert "not empty so not removed" not in completed.stderr, completed.stderr
    assert not (root / "usr/lib/remediator").exists()
    assert (root / "etc/remediator/policies.d/services-cache.yaml").is_file()


def test_deb_purge_removes_etc_remediator_with_files_the_administrator_added(
    tmp_path: Path, debian12: Path
) -> None:
    root = make_script_root(tmp_path / "root")
    install_in_root(root, debian12)
    (root / "etc/remediator/policies.d/local.yaml").write_text("# the administrator's own policy\n")
    (root / "run/remediator").mkdir(parents=True)
    (root / "run/remediator/state.json").write_text("{}")
    completed = dpkg_in_root(root, "--purge", "remediator")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert not (root / "etc/remediator").exists()
    assert not (root / "run/remediator").exists()
    assert "deb-systemd-helper purge remediator.service" in script_calls(root)
