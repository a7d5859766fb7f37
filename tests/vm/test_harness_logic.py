"""The VM harness's host-side logic, without booting anything (runs in the plain unit suite)."""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from tests.vm import harness
from tests.vm.conftest import fail_or_skip_unavailable


def _fake_module(depends: str) -> bytes:
    # Enough of a .ko for the parser: NUL-separated key=value entries of .modinfo.
    return b"\x7fELF...\x00license=GPL\x00depends=" + depends.encode() + b"\x00vermagic=6.1.0\x00"


def test_modinfo_depends_reads_the_comma_separated_names_and_normalizes_dashes() -> None:
    assert harness.modinfo_depends(_fake_module("virtio,9pnet,virtio-ring")) == [
        "virtio",
        "9pnet",
        "virtio_ring",
    ]
    assert harness.modinfo_depends(_fake_module("")) == []


def test_module_order_puts_every_module_after_its_dependencies_once() -> None:
    graph: Dict[str, List[str]] = {
        "virtio_ring": [],
        "virtio": ["virtio_ring"],
        "virtio_pci": ["virtio_ring", "virtio"],
        "9pnet": [],
        "9pnet_virtio": ["virtio", "9pnet", "virtio_ring"],
    }

    order = harness.resolve_module_order(["virtio_pci", "9pnet_virtio"], graph.__getitem__, frozenset())

    assert order == ["virtio_ring", "virtio", "virtio_pci", "9pnet", "9pnet_virtio"]


def test_module_order_leaves_out_built_in_modules_and_their_subtrees() -> None:
    graph = {"ext4": ["jbd2", "crc16"], "jbd2": [], "crc16": []}

    order = harness.resolve_module_order(["ext4"], graph.__getitem__, frozenset({"crc16"}))

    assert order == ["jbd2", "ext4"]


def test_module_dependency_cycle_is_reported_not_looped() -> None:
    graph = {"a": ["b"], "b": ["a"]}

    with pytest.raises(harness.VmUnavailable, match="cycle"):
        harness.resolve_module_order(["a"], graph.__getitem__, frozenset())


def test_vmlinux_is_the_elf_inside_the_xz_payload_of_a_bzimage() -> None:
    elf = b"\x7fELF" + b"kernel text" * 100
    bzimage = b"MZ setup code" * 50 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\x00\x10\x00\x00trailer"

    assert harness.extract_vmlinux(bzimage) == elf


def test_bzimage_without_xz_payload_is_left_compressed() -> None:
    assert harness.extract_vmlinux(b"MZ" + b"\x1f\x8b\x08gzip payload") is None


def test_kernel_package_is_resolved_from_apt_cache_depends_and_show() -> None:
    depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
    show = "Package: linux-image-6.1.0-56-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\n"

    assert harness.parse_apt_depends(depends) == "linux-image-6.1.0-56-amd64"
    assert harness.parse_apt_version(show) == "6.1.192-2"
    assert harness.parse_apt_depends("linux-image-amd64\n") is None


def test_cache_key_parts_carry_no_characters_qemu_options_would_split_on() -> None:
    key = harness.cache_key_part("1:1.35.0-4+deb12u1,b1")

    assert "," not in key
    assert ":" not in key
    assert harness.qemu_option_value("/a,b") == "/a,,b"


def test_cache_lives_where_the_environment_says_and_defaults_outside_the_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REMEDIATOR_VM_CACHE", str(tmp_path / "vm-cache"))
    assert harness.cache_root() == tmp_path / "vm-cache"

    monkeypatch.delenv("REMEDIATOR_VM_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert harness.cache_root() == tmp_path / "home" / ".cache" / "remediator" / "vm"
    assert harness.REPO_ROOT not in harness.cache_root().parents


def test_console_text_has_no_nul_bytes_and_unix_line_ends() -> None:
    assert harness.strip_console_noise(b"\x00\x00boot\r\n\x00ok\r\n") == "boot\nok\n"


def test_exit_marker_of_another_run_or_inside_a_line_is_ignored() -> None:
    log = (
        "REMEDIATOR-VM-EXIT 0ld0ld 9\n"
        "echo REMEDIATOR-VM-EXIT abc123 5\n"
        "REMEDIATOR-VM-EXIT abc123 3\n"
        "[   12.2] reboot: Power down\n"
    )

    assert harness.parse_exit_marker(log, "abc123") == 3
    assert harness.parse_exit_marker("REMEDIATOR-VM-EXIT 0ld0ld 9\n", "abc123") is None


def test_guest_limit_leaves_the_boot_allowance_and_never_drops_below_one_second() -> None:
    assert harness.guest_time_limit(60, 15) == 45
    assert harness.guest_time_limit(3, 15) == 1


def test_command_script_exports_the_documented_environment_and_quotes_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/opt/it's here/bin:/usr/bin")

    script = harness.guest_command_script("exit 4")

    assert "export PATH='/opt/it'\"'\"'s here/bin:/usr/bin:" in script
    assert "export HOME=/tmp\n" in script
    assert "export PYTHONDONTWRITEBYTECODE=1\n" in script
    assert f"export VM_OUT={harness.GUEST_OUT_DIR}\n" in script
    assert script.endswith("exit 4\n")
    completed = subprocess.run(["sh", "-n", "-c", script], check=False)
    assert completed.returncode == 0


def test_only_paths_under_the_guest_tmpfs_mounts_are_bound_back_in() -> None:
    hidden = harness.paths_hidden_by_guest_tmpfs(
        [Path("/tmp/ci/clone"), Path("/run/venv"), Path("/work/main"), Path("/tmpfoo"), Path("/tmp/ci/clone")]
    )

    assert hidden == ["/tmp/ci/clone", "/run/venv"]


def test_mirror_comes_from_the_deb822_stanza_serving_the_suite(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
    )

    assert harness.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_falls_back_to_one_line_sources_then_the_default(tmp_path: Path) -> None:
    assert harness.debian_mirror(tmp_path) == harness.DEFAULT_MIRROR

    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main\n")
    assert harness.debian_mirror(tmp_path) == "http://old.example/debian"


def test_failed_host_step_becomes_vm_unavailable_naming_the_step() -> None:
    with pytest.raises(harness.VmUnavailable, match="the step failed"):
        harness._run(["sh", "-c", "echo the step failed >&2; exit 3"], what="demo")
    with pytest.raises(harness.VmUnavailable, match="not installed"):
        harness._run(["/nonexistent/qemu"], what="demo")


def test_unavailable_vm_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = harness.VmUnavailable("mirror unreachable")

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="mirror unreachable"):
        fail_or_skip_unavailable(reason)

    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="mirror unreachable"):
        fail_or_skip_unavailable(reason)


def test_full_image_customization_masks_gettys_enables_the_test_unit_and_disables_node_exporter(
    tmp_path: Path,
) -> None:
    (tmp_path / "var/cache/apt/archives").mkdir(parents=True)
    (tmp_path / "var/cache/apt/archives/python3_3.11_amd64.deb").write_text("deb")
    # What prometheus-node-exporter's postinst leaves: a link into the image, dangling on the host.
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "prometheus-node-exporter.service").symlink_to(
        "/lib/systemd/system/prometheus-node-exporter.service"
    )

    harness.customize_full_rootfs(tmp_path)

    systemd_dir = tmp_path / "etc/systemd/system"
    assert (systemd_dir / "serial-getty@ttyS0.service").readlink() == Path("/dev/null")
    assert (systemd_dir / "multi-user.target.wants" / harness.TEST_UNIT).is_symlink()
    # Installed, not started at boot: only the test that scrapes it starts it.
    assert not (systemd_dir / "multi-user.target.wants" / "prometheus-node-exporter.service").is_symlink()
    unit = (systemd_dir / harness.TEST_UNIT).read_text()
    unit_section = unit.split("\n[Service]")[0]
    assert "SuccessAction=poweroff-force" in unit_section
    assert "FailureAction=poweroff-force" in unit_section
    assert "Type=simple" in unit
    assert (tmp_path / "etc/machine-id").read_text().strip()
    assert "Storage=volatile" in (tmp_path / "etc/systemd/journald.conf.d/90-remediator-vm.conf").read_text()
    assert not list((tmp_path / "var/cache/apt/archives").glob("*.deb"))


@pytest.mark.skipif(shutil.which("debugfs") is None, reason="e2fsprogs not installed")
def test_ext4_image_is_sparse_and_holds_the_given_files(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "hello.txt").write_text("hi\n")

    image = harness.make_ext4_image(tmp_path / "disk.raw", 64, files_dir=files)

    assert image.stat().st_size == 64 << 20
    assert image.stat().st_blocks * 512 < 64 << 20
    listing = subprocess.run(
        ["debugfs", "-R", "cat /hello.txt", str(image)], capture_output=True, text=True, check=True
    )
    assert listing.stdout == "hi\n"
