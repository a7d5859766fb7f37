"""Boot a real Linux kernel under qemu, for tests that need cgroup v2 and PSI.

The development and CI hosts run a hybrid cgroup layout whose memory controller
belongs to the machine's own infrastructure, and their kernel refuses PSI
triggers; we must never write to their /sys/fs/cgroup or /proc/sys. So tests
that need a real kernel boot Debian's kernel in a VM (recipe and measurements:
shared/notes/vm-recipe.md).

Two shapes share one kernel and one initramfs:

* light (seconds): the initramfs mounts the host's root read-only over 9p,
  builds a small root of bind mounts plus proc, sys, dev, cgroup2, tmpfs /tmp
  and /run and a writable 9p share at ``/out``, and runs one shell command as
  root in it (:func:`boot_light`).
* full (~20 s): Debian bookworm with systemd as PID 1 on a cached ext4 image
  opened with ``snapshot=on``; a test unit runs ``run.sh`` from a 9p payload
  folder and copies the journal back (:func:`boot_full`).

Everything downloaded or built lives in a cache outside the repository
(``$REMEDIATOR_VM_CACHE`` or ``~/.cache/remediator/vm``), keyed on its inputs,
so a warm run only asks ``apt-cache``/``dpkg`` and downloads nothing. When
something in the chain is missing the functions raise :class:`VmUnavailable`
with the reason instead of hanging.

Command line (for debugging)::

    python -m tests.vm.harness build [--full]   # prebuild the cache
    python -m tests.vm.harness shell [--full]   # interactive root shell in the VM
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

# Part of every cache key, next to a digest of the texts that go into each
# artifact (init script, module lists, unit, package list). Bump it when code
# that shapes an artifact changes (e.g. customize_full_rootfs): old entries are
# then simply not used.
RECIPE_VERSION = 1

KERNEL_META_PACKAGE = "linux-image-amd64"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

REPO_ROOT = Path(__file__).resolve().parents[2]

# Paths inside the guest.
GUEST_OUT_DIR = "/out"
GUEST_PAYLOAD_DIR = "/payload"
TEST_UNIT = "remediator-vm-test.service"

# Files the guest leaves in the shared folder (out_dir / payload_dir).
EXIT_CODE_FILE = ".vm-exit-code"
GUEST_TIMEOUT_FILE = ".vm-guest-timeout"
CONSOLE_LOG_FILE = "vm-console.log"
JOURNAL_FILE = "journal.json"

# Time a VM needs besides the command itself (boot, mounts, power-off). The
# guest's watchdog gets timeout_sec minus this, so it fires, and powers the VM
# off cleanly with a complete log, before the host's hard timeout kills qemu.
# Measured: light boots to the command in ~4 s, full reaches the unit in ~20 s;
# the margins leave room for a loaded 2-core machine.
LIGHT_BOOT_ALLOWANCE_SEC = 15.0
FULL_BOOT_ALLOWANCE_SEC = 60.0

# Modules the kernel package ships as modules (not built in), loaded in
# dependency order computed from each module's `depends=`.
BASE_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
# crc32c_generic first: ext4 and jbd2 only name it as a soft dependency
# ("crypto-crc32c"), which nothing would load in a modprobe-less initramfs.
DISK_MODULES = ("virtio_blk", "crc32c_generic", "ext4")

LIGHT_HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "e2fsprogs", "xz-utils")
FULL_HOST_PACKAGES = ("debootstrap", "zstd")

# Packages of the full image. Besides systemd and the Python libraries the
# daemon imports, a .deb of a Python app with bundled wheels needs a venv
# (python3-venv brings ensurepip's wheels), adduser for a system user in its
# postinst and init-system-helpers (deb-systemd-helper/invoke-rc.d). The VM has
# no network, so every runtime dependency must be here. prometheus-node-exporter
# is the real scraper of the daemon's metrics textfile (issue 14); it is not
# started at boot (FULL_IMAGE_DISABLED_UNITS), only by the test that scrapes it.
FULL_IMAGE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "python3",
    "python3-systemd",
    "python3-yaml",
    "python3-venv",
    "procps",
    "adduser",
    "init-system-helpers",
    "kmod",
    "util-linux",
    "e2fsprogs",
    "prometheus-node-exporter",
)
# Enabled by their packages' postinst; started only by the tests that need them, so no other full
# boot pays for them under TCG.
FULL_IMAGE_DISABLED_UNITS = ("prometheus-node-exporter.service",)
FULL_IMAGE_SIZE_MIB = 2048
# A fixed, non-empty machine-id: an empty one makes systemd run first-boot logic.
FULL_IMAGE_MACHINE_ID = hashlib.md5(b"remediator-vm").hexdigest()
FULL_IMAGE_MASKED_UNITS = (
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "console-getty.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
)

APT_TIMEOUT_SEC = 600.0
DEBOOTSTRAP_TIMEOUT_SEC = 1200.0
APT_NETWORK_OPTIONS = ("-o", "Acquire::Retries=2", "-o", "Acquire::http::Timeout=30")


class VmUnavailable(Exception):
    """Something the VM needs cannot be had here (tool, package, mirror)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VmResult:
    """What one VM run gave back.

    ``exit_code`` is the command's (light) or ``run.sh``'s (full) exit status,
    or None when it is unknown: the command ran out of time (``timed_out``;
    ``guest_timed_out`` tells that the guest's own watchdog stopped it and
    powered off cleanly, rather than the host killing qemu) or the VM died
    before reporting (the log says why).
    """

    exit_code: Optional[int]
    log: str
    elapsed: float
    out_dir: Path
    timed_out: bool = False
    guest_timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self, tail_lines: int = 80) -> str:
        """A summary plus the end of the console log, for assertion messages."""
        if self.timed_out:
            side = "the guest's watchdog" if self.guest_timed_out else "the host (qemu killed)"
            status = f"timed out, stopped by {side}"
        elif self.exit_code is None:
            status = "no exit code reported (VM died early?)"
        else:
            status = f"exit code {self.exit_code}"
        tail = "\n".join(self.log.splitlines()[-tail_lines:])
        return (
            f"VM {status} after {self.elapsed:.1f}s; out_dir={self.out_dir}\n--- console (tail) ---\n{tail}"
        )


@dataclass(frozen=True)
class KernelBuild:
    """A kernel unpacked from Debian's package: ELF vmlinux and the modules we load."""

    key: str
    kernel_image: Path
    modules_dir: Path
    base_order: Tuple[str, ...]
    disk_order: Tuple[str, ...]


@dataclass(frozen=True)
class BootKit:
    """Kernel and initramfs, shared by both shapes."""

    kernel: KernelBuild
    initramfs: Path


@dataclass
class Timing:
    label: str
    seconds: float


# Build and boot durations of this process, printed by tests/vm/conftest.py.
TIMINGS: List[Timing] = []


def record_timing(label: str, seconds: float) -> None:
    TIMINGS.append(Timing(label, seconds))


def _say(message: str) -> None:
    # stderr, not logging: pytest shows it with -s and it is what the CLI user wants to see.
    print(f"[vm] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- cache and locks


def cache_root() -> Path:
    configured = os.environ.get("REMEDIATOR_VM_CACHE")
    root = Path(configured) if configured else Path.home() / ".cache" / "remediator" / "vm"
    return root.expanduser().resolve()


@contextlib.contextmanager
def _cache_lock(name: str) -> Iterator[None]:
    """Serialize builders of one artifact across processes (pytest workers, CLI)."""
    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recipe_digest(*inputs: object) -> str:
    """Short digest of what an artifact is built from, for its cache key."""
    return hashlib.sha256(json.dumps([RECIPE_VERSION, *inputs]).encode()).hexdigest()[:10]


def cache_key_part(text: str) -> str:
    """A package name or version as a file name qemu options cannot misparse (no ',' or ':')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


# --------------------------------------------------------------------------- host commands and apt


def _run(
    argv: Sequence[str], *, what: str, timeout: float = 120.0, cwd: Optional[Path] = None
) -> subprocess.CompletedProcess[str]:
    """Run a host tool; any failure becomes VmUnavailable naming the step."""
    try:
        completed = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise VmUnavailable(f"{what}: {argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise VmUnavailable(f"{what}: {argv[0]} did not finish within {timeout:.0f}s") from exc
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-8:]
        raise VmUnavailable(f"{what} failed ({completed.returncode}): " + " | ".join(detail))
    return completed


def _query(argv: Sequence[str]) -> Optional[str]:
    """Run a read-only query; None when it fails."""
    try:
        completed = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None


def installed_version(package: str) -> Optional[str]:
    out = _query(["dpkg-query", "-W", "-f=${Status}\t${Version}", package])
    if out is None:
        return None
    status, _, version = out.partition("\t")
    return version if status.endswith("install ok installed") and version else None


class _Apt:
    """apt-get, with `update` run at most once per process and only when needed."""

    updated = False

    @classmethod
    def update(cls) -> None:
        if cls.updated:
            return
        _require_root("apt-get update")
        _say("apt-get update")
        with _cache_lock("apt"):
            _run(
                ["apt-get", "update", *APT_NETWORK_OPTIONS],
                what="apt-get update (is the Debian mirror reachable?)",
                timeout=APT_TIMEOUT_SEC,
            )
        cls.updated = True

    @classmethod
    def ensure_installed(cls, packages: Sequence[str]) -> None:
        missing = [package for package in packages if installed_version(package) is None]
        if not missing:
            return
        _require_root(f"installing {' '.join(missing)}")
        cls.update()
        _say(f"apt-get install {' '.join(missing)}")
        with _cache_lock("apt"):
            _run(
                [
                    "apt-get",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    *APT_NETWORK_OPTIONS,
                    *missing,
                ],
                what=f"apt-get install {' '.join(missing)}",
                timeout=APT_TIMEOUT_SEC,
            )


def _require_root(doing: str) -> None:
    if os.geteuid() != 0:
        raise VmUnavailable(f"{doing} needs root; run `bash .ci/vm-deps.sh --full` as root first")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise VmUnavailable(f"{name} not found on this host")
    return found


# --------------------------------------------------------------------------- kernel


def parse_apt_depends(output: str) -> Optional[str]:
    """The kernel package that `apt-cache depends linux-image-amd64` names."""
    match = re.search(r"^\s*\|?Depends:\s*(linux-image-\S+)", output, re.MULTILINE)
    return match.group(1) if match else None


def parse_apt_version(show_output: str) -> Optional[str]:
    match = re.search(r"^Version:\s*(\S+)", show_output, re.MULTILINE)
    return match.group(1) if match else None


def _resolve_kernel_package() -> Optional[Tuple[str, str]]:
    depends = _query(["apt-cache", "depends", KERNEL_META_PACKAGE])
    name = parse_apt_depends(depends) if depends else None
    if name is None:
        return None
    show = _query(["apt-cache", "show", "--no-all-versions", name])
    version = parse_apt_version(show) if show else None
    return (name, version) if version else None


def modinfo_depends(module_bytes: bytes) -> List[str]:
    """Module names from the `depends=` entry of a .ko's .modinfo section."""
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", module_bytes)
    if not match or not match.group(1):
        return []
    return [normalize_module_name(name.decode()) for name in match.group(1).split(b",") if name]


def normalize_module_name(name: str) -> str:
    # The kernel treats '-' and '_' in module names as the same character.
    return name.replace("-", "_")


def resolve_module_order(
    wanted: Sequence[str], depends_of: Callable[[str], List[str]], builtin: frozenset[str]
) -> List[str]:
    """Modules to insmod, every one after the modules it depends on, built-ins left out."""
    order: List[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = normalize_module_name(name)
        if name in builtin or name in order:
            return
        if name in visiting:
            raise VmUnavailable(f"module dependency cycle through {name}")
        visiting.add(name)
        for dependency in depends_of(name):
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def extract_vmlinux(bzimage: bytes) -> Optional[bytes]:
    """The ELF kernel inside an xz-compressed bzImage, or None if it is packed otherwise.

    qemu boots the ELF directly (PVH entry), which skips the in-guest
    decompression: about 5 s per boot under TCG.
    """
    start = bzimage.find(b"\xfd7zXZ\x00")
    if start < 0:
        return None
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
    except lzma.LZMAError:
        return None
    return elf if elf.startswith(b"\x7fELF") else None


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.zst"):
        completed = subprocess.run(
            [_tool("zstd"), "-dc", str(path)], capture_output=True, check=False, timeout=60
        )
        if completed.returncode != 0:
            raise VmUnavailable(f"cannot decompress {path.name}")
        return completed.stdout
    return data


def _module_stem(file_name: str) -> str:
    return normalize_module_name(re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", file_name))


def _load_kernel_build(directory: Path) -> Optional[KernelBuild]:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    return KernelBuild(
        key=directory.name,
        kernel_image=directory / str(manifest["kernel_image"]),
        modules_dir=directory / "modules",
        base_order=tuple(manifest["base_order"]),
        disk_order=tuple(manifest["disk_order"]),
    )


def _newest_cached_kernel() -> Optional[KernelBuild]:
    kernels = cache_root() / "kernel"
    candidates = sorted(
        (path for path in kernels.glob("linux-image-*") if (path / "manifest.json").is_file()),
        key=lambda path: (path / "manifest.json").stat().st_mtime,
    )
    return _load_kernel_build(candidates[-1]) if candidates else None


def ensure_kernel() -> KernelBuild:
    """Debian's current kernel, downloaded and unpacked once into the cache."""
    resolved = _resolve_kernel_package()
    if resolved is None:
        # No apt lists (fresh machine) or the meta package is unknown: a cached
        # kernel beats a network round trip; otherwise refresh the lists once.
        cached = _newest_cached_kernel()
        if cached is not None:
            _say(f"apt-cache cannot resolve {KERNEL_META_PACKAGE}; using cached {cached.key}")
            return cached
        _Apt.update()
        resolved = _resolve_kernel_package()
        if resolved is None:
            raise VmUnavailable(f"apt-cache cannot resolve the package behind {KERNEL_META_PACKAGE}")
    name, version = resolved
    modules_digest = recipe_digest(BASE_MODULES, DISK_MODULES)
    directory = cache_root() / "kernel" / f"{cache_key_part(name)}_{cache_key_part(version)}-{modules_digest}"
    build = _load_kernel_build(directory)
    if build is not None:
        return build
    with _cache_lock(f"kernel-{directory.name}"):
        build = _load_kernel_build(directory)
        if build is None:
            started = time.monotonic()
            _build_kernel(name, version, directory)
            record_timing(f"kernel download+unpack ({name} {version})", time.monotonic() - started)
            build = _load_kernel_build(directory)
    if build is None:
        raise VmUnavailable(f"kernel build in {directory} left no manifest")
    return build


def _download_package(name: str, version: str, into: Path) -> Path:
    # Sandbox user root: the scratch dir is private to root, and _apt could not write into it.
    argv = ["apt-get", "download", *APT_NETWORK_OPTIONS, "-o", "APT::Sandbox::User=root", f"{name}={version}"]
    what = f"apt-get download {name}={version} (is the Debian mirror reachable?)"
    try:
        _run(argv, what=what, timeout=APT_TIMEOUT_SEC, cwd=into)
    except VmUnavailable:
        # Stale lists point at a version the mirror dropped: refresh once, retry.
        if _Apt.updated:
            raise
        _Apt.update()
        _run(argv, what=what, timeout=APT_TIMEOUT_SEC, cwd=into)
    debs = sorted(into.glob(f"{name}_*.deb"))
    if not debs:
        raise VmUnavailable(f"apt-get download {name} produced no .deb")
    return debs[0]


def _build_kernel(name: str, version: str, directory: Path) -> None:
    _say(f"building kernel cache entry {directory.name}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=directory.parent) as scratch_name:
        scratch = Path(scratch_name)
        deb = _download_package(name, version, scratch)
        unpacked = scratch / "unpacked"
        _run([_tool("dpkg-deb"), "-x", str(deb), str(unpacked)], what=f"dpkg-deb -x {deb.name}")
        deb.unlink()

        vmlinuz = sorted(unpacked.glob("boot/vmlinuz-*"))
        module_roots = sorted(unpacked.glob("lib/modules/*")) + sorted(unpacked.glob("usr/lib/modules/*"))
        if not vmlinuz or not module_roots:
            raise VmUnavailable(f"{deb.name} has no boot/vmlinuz-* or lib/modules/*")
        module_root = module_roots[0]

        module_files: Dict[str, Path] = {
            _module_stem(path.name): path for path in module_root.rglob("*.ko*") if path.is_file()
        }
        builtin_file = module_root / "modules.builtin"
        builtin = frozenset(
            _module_stem(Path(line.strip()).name)
            for line in (builtin_file.read_text().splitlines() if builtin_file.exists() else [])
            if line.strip()
        )
        module_bytes: Dict[str, bytes] = {}

        def depends_of(module: str) -> List[str]:
            if module not in module_files:
                raise VmUnavailable(f"kernel {name} has no module {module} (and it is not built in)")
            if module not in module_bytes:
                module_bytes[module] = _read_module(module_files[module])
            return modinfo_depends(module_bytes[module])

        base_order = resolve_module_order(BASE_MODULES, depends_of, builtin)
        disk_order = [
            m for m in resolve_module_order(DISK_MODULES, depends_of, builtin) if m not in base_order
        ]

        staged = scratch / "staged"
        (staged / "modules").mkdir(parents=True)
        for module in base_order + disk_order:
            (staged / "modules" / f"{module}.ko").write_bytes(module_bytes[module])
        bzimage = vmlinuz[0].read_bytes()
        elf = extract_vmlinux(bzimage)
        kernel_image = "vmlinux" if elf is not None else "vmlinuz"
        (staged / kernel_image).write_bytes(elf if elf is not None else bzimage)
        manifest = {
            "package": name,
            "version": version,
            "release": module_root.name,
            "kernel_image": kernel_image,
            "base_order": base_order,
            "disk_order": disk_order,
            "recipe": RECIPE_VERSION,
        }
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        staged.rename(directory)


# --------------------------------------------------------------------------- initramfs

# PID 1 of both shapes. Parameters come from the kernel command line (rmd.*);
# the light shape's command comes from the read-only 9p share "ctl".
INIT_SCRIPT = r"""#!/bin/busybox sh
# PID 1 of the remediator test VM. Generated by tests/vm/harness.py: edit it there.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
hostname remediator-vm

SHAPE=light TIMEOUT=60 NONCE=none INTERACTIVE=0 DISK=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        rmd.shape=*) SHAPE="${arg#*=}" ;;
        rmd.timeout=*) TIMEOUT="${arg#*=}" ;;
        rmd.nonce=*) NONCE="${arg#*=}" ;;
        rmd.interactive=*) INTERACTIVE="${arg#*=}" ;;
        rmd.disk=*) DISK="${arg#*=}" ;;
    esac
done

fail() {
    echo "REMEDIATOR-VM-FAIL $NONCE $*"
    poweroff -f
    sleep 10
}

load_modules() {
    for module in $(cat "$1"); do
        insmod "/lib/modules/$module.ko" || fail "insmod $module"
    done
}

mount_9p() {
    mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$3" "$1" "$2" || fail "mount 9p $1 on $2"
}

boot_full() {
    mkdir -p /newroot
    waited=0
    while [ ! -b /dev/vda ]; do
        waited=$((waited + 1))
        [ "$waited" -gt 100 ] && fail "no /dev/vda after 10s"
        usleep 100000
    done
    mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "mount /dev/vda"
    # The image is opened with snapshot=on: this drop-in lives for this boot only.
    dropin="/newroot/etc/systemd/system/__TEST_UNIT__.d"
    mkdir -p "$dropin"
    if [ "$INTERACTIVE" = 1 ]; then guard=infinity; else guard=$((TIMEOUT + 30)); fi
    printf '[Service]\nRuntimeMaxSec=%s\n' "$guard" > "$dropin/90-guard.conf"
    umount /proc /sys
    mount --move /dev /newroot/dev
    exec switch_root /newroot /sbin/init
}

run_light() {
    mkdir -p /host /ctl /newroot
    mount_9p root /host ro,cache=loose
    mount_9p ctl /ctl ro
    # The host's root is read-only; a tmpfs root holding a bind mount of each of
    # its top-level entries leaves room for the mount points below (/out ...).
    mount -t tmpfs -o mode=0755 newroot /newroot
    for entry in /host/* /host/.[!.]*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        name="${entry#/host/}"
        case "$name" in proc|sys|dev|tmp|run|out) continue ;; esac
        if [ -L "$entry" ]; then
            ln -s "$(readlink "$entry")" "/newroot/$name"
        elif [ -d "$entry" ]; then
            mkdir "/newroot/$name" && mount -o bind "$entry" "/newroot/$name"
        else
            touch "/newroot/$name" && mount -o bind "$entry" "/newroot/$name"
        fi
    done
    mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/tmp /newroot/run /newroot/out
    mount -t proc proc /newroot/proc
    mount -t sysfs sysfs /newroot/sys
    mount -t devtmpfs devtmpfs /newroot/dev
    mkdir -p /newroot/dev/pts /newroot/dev/shm
    mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
    mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
    mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup || fail "mount cgroup2"
    echo "+memory +cpu +io +pids" > /newroot/sys/fs/cgroup/cgroup.subtree_control || fail "enable controllers"
    mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
    mount -t tmpfs -o mode=0755 tmpfs /newroot/run
    mount_9p out /newroot/out rw
    # Host paths the command needs that the tmpfs /tmp or /run would hide (a
    # repository or venv checked out under /tmp): bind them back in.
    while IFS= read -r kept; do
        [ -n "$kept" ] || continue
        mkdir -p "/newroot$kept" && mount -o bind "/host$kept" "/newroot$kept" || fail "bind $kept"
    done < /ctl/keep-paths
    mkdir -p /newroot/run/remediator-vm
    cp /ctl/command.sh /newroot/run/remediator-vm/command.sh || fail "no command"

    echo "REMEDIATOR-VM-READY $NONCE"
    if [ "$INTERACTIVE" = 1 ]; then
        env -i /bin/busybox setsid /bin/busybox cttyhack \
            /bin/busybox chroot /newroot /bin/sh /run/remediator-vm/command.sh
        rc=$?
    else
        env -i /bin/busybox chroot /newroot /bin/sh /run/remediator-vm/command.sh </dev/null &
        command_pid=$!
        (
            sleep "$TIMEOUT"
            echo "REMEDIATOR-VM-GUEST-TIMEOUT $NONCE ${TIMEOUT}s"
            echo "$TIMEOUT" > /newroot/out/__GUEST_TIMEOUT_FILE__
            kill -KILL "$command_pid"
        ) &
        watchdog_pid=$!
        wait "$command_pid"
        rc=$?
        kill "$watchdog_pid" 2>/dev/null
    fi
    echo "$rc" > /newroot/out/__EXIT_CODE_FILE__
    sync
    echo "REMEDIATOR-VM-EXIT $NONCE $rc"
    poweroff -f
    sleep 10
}

load_modules /etc/modules-base
if [ "$SHAPE" = full ] || [ "$DISK" = 1 ]; then load_modules /etc/modules-disk; fi
if [ "$SHAPE" = full ]; then boot_full; else run_light; fi
fail "unknown shape $SHAPE"
"""


def render_init_script() -> str:
    return (
        INIT_SCRIPT.replace("__TEST_UNIT__", TEST_UNIT)
        .replace("__GUEST_TIMEOUT_FILE__", GUEST_TIMEOUT_FILE)
        .replace("__EXIT_CODE_FILE__", EXIT_CODE_FILE)
    )


def _busybox_binary() -> Path:
    listing = _query(["dpkg-query", "-L", "busybox-static"]) or ""
    for line in listing.splitlines():
        if line.endswith("/bin/busybox") and Path(line).is_file():
            return Path(line)
    raise VmUnavailable("busybox-static is installed but its /bin/busybox is missing")


def ensure_initramfs(kernel: KernelBuild) -> Path:
    busybox_version = installed_version("busybox-static")
    if busybox_version is None:
        raise VmUnavailable("busybox-static is not installed")
    init_digest = recipe_digest(render_init_script())
    name = f"{kernel.key}-busybox_{cache_key_part(busybox_version)}-{init_digest}.cpio.gz"
    target = cache_root() / "initramfs" / name
    if target.is_file():
        return target
    with _cache_lock(f"initramfs-{name}"):
        if not target.is_file():
            started = time.monotonic()
            _build_initramfs(kernel, target)
            record_timing("initramfs build", time.monotonic() - started)
    return target


def _build_initramfs(kernel: KernelBuild, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    busybox = _busybox_binary()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=target.parent) as scratch_name:
        staging = Path(scratch_name) / "root"
        for directory in ("bin", "etc", "lib/modules", "dev", "proc", "sys"):
            (staging / directory).mkdir(parents=True, exist_ok=True)
        shutil.copy2(busybox, staging / "bin" / "busybox")
        init = staging / "init"
        init.write_text(render_init_script())
        init.chmod(0o755)
        for module in kernel.base_order + kernel.disk_order:
            shutil.copy2(kernel.modules_dir / f"{module}.ko", staging / "lib" / "modules" / f"{module}.ko")
        (staging / "etc" / "modules-base").write_text("\n".join(kernel.base_order) + "\n")
        (staging / "etc" / "modules-disk").write_text("\n".join(kernel.disk_order) + "\n")

        entries = sorted(str(path.relative_to(staging)) for path in staging.rglob("*") if path != staging)
        completed = subprocess.run(
            [str(busybox), "cpio", "-o", "-H", "newc", "-R", "0:0"],
            cwd=staging,
            input=("\n".join(entries) + "\n").encode(),
            capture_output=True,
            check=False,
            timeout=120,
        )
        if completed.returncode != 0:
            raise VmUnavailable(f"busybox cpio failed: {completed.stderr.decode(errors='replace')[-500:]}")
        partial = target.with_suffix(".partial")
        with gzip.GzipFile(partial, "wb", compresslevel=6, mtime=0) as packed:
            packed.write(completed.stdout)
        partial.replace(target)


_BOOT_KITS: Dict[Path, BootKit] = {}


def ensure_light() -> BootKit:
    """Host tools, kernel and initramfs; cheap after the first call in a process."""
    root = cache_root()
    if root in _BOOT_KITS:
        return _BOOT_KITS[root]
    started = time.monotonic()
    builds_before = len(TIMINGS)
    _Apt.ensure_installed(LIGHT_HOST_PACKAGES)
    _tool("qemu-system-x86_64")
    kernel = ensure_kernel()
    kit = BootKit(kernel=kernel, initramfs=ensure_initramfs(kernel))
    state = "cold (built)" if len(TIMINGS) > builds_before else "warm (cached)"
    record_timing(f"kernel+initramfs ready, {state}: {kernel.key}", time.monotonic() - started)
    _BOOT_KITS[root] = kit
    return kit


# --------------------------------------------------------------------------- qemu


def qemu_option_value(value: str) -> str:
    # qemu's -opt key=value lists use ',' as separator; ',,' is a literal comma.
    return value.replace(",", ",,")


def _qemu_base(
    kit: BootKit, *, mem_mib: int, smp: int, append: Sequence[str], interactive: bool
) -> List[str]:
    cmdline = [
        "console=ttyS0",
        "panic=-1",
        "quiet",
        "mitigations=off",
        "rdinit=/init",
        *append,
    ]
    return [
        _tool("qemu-system-x86_64"),
        "-nodefaults",
        "-no-user-config",
        # KVM hangs on these hosts; TCG with one host thread per vCPU works.
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        str(smp),
        "-m",
        str(mem_mib),
        "-display",
        "none",
        "-serial",
        "mon:stdio" if interactive else "stdio",
        "-nic",
        "none",
        # A guest reboot or panic ends qemu instead of looping.
        "-no-reboot",
        "-kernel",
        str(kit.kernel.kernel_image),
        "-initrd",
        str(kit.initramfs),
        "-append",
        " ".join(cmdline),
    ]


def _virtfs(path: Path, tag: str, *, readonly: bool) -> List[str]:
    options = f"local,path={qemu_option_value(str(path))},mount_tag={tag},security_model=none,multidevs=remap"
    return ["-virtfs", options + (",readonly=on" if readonly else "")]


@dataclass(frozen=True)
class ReadOnlyDrive:
    """A drive attached with readonly=on: qemu then takes a shared lock, so VMs (a test and a
    benchmark, say) can use the same cached image at once; a read-write drive is locked exclusively."""

    path: Path


Drive = Union[Path, ReadOnlyDrive]


def _virtio_drive(path: Path, *, snapshot: bool, readonly: bool = False) -> List[str]:
    options = f"file={qemu_option_value(str(path.resolve()))},format=raw,if=virtio"
    options += ",snapshot=on" if snapshot else ""
    options += ",readonly=on" if readonly else ""
    return ["-drive", options]


def _reserved_vda() -> Path:
    placeholder = cache_root() / "reserved-vda.raw"
    if not placeholder.is_file():
        partial = placeholder.with_name(f".{placeholder.name}.{os.getpid()}")
        partial.write_bytes(b"\0" * 65536)
        partial.replace(placeholder)
    return placeholder


def _die_with_parent_prefix() -> List[str]:
    """`setpriv --pdeathsig`: qemu gets SIGKILL when pytest dies, so no VM outlives its run.

    (A preexec_fn would do the same from Python but is unsafe with the console thread running.)
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "SIGKILL", "--"] if setpriv else []


def strip_console_noise(raw: bytes) -> str:
    """Serial bytes as text: NULs dropped (the 8250 emits them), CRLF as LF."""
    return raw.replace(b"\x00", b"").decode("utf-8", errors="replace").replace("\r\n", "\n")


def parse_exit_marker(log: str, nonce: str) -> Optional[int]:
    """The exit code the guest printed for this run (matched by nonce), or None."""
    matches = re.findall(rf"^REMEDIATOR-VM-EXIT {re.escape(nonce)} (\d+)\s*$", log, re.MULTILINE)
    return int(matches[-1]) if matches else None


def _read_exit_code(out_dir: Path, log: str, nonce: str) -> Optional[int]:
    # The file on the writable share is the primary channel; the marker line
    # covers a share that failed to mount or flush.
    with contextlib.suppress(OSError, ValueError):
        return int((out_dir / EXIT_CODE_FILE).read_text().strip())
    return parse_exit_marker(log, nonce)


def _echo_console() -> bool:
    return os.environ.get("REMEDIATOR_VM_ECHO", "") not in ("", "0")


def _run_qemu(argv: Sequence[str], *, timeout_sec: float, out_dir: Path, nonce: str, label: str) -> VmResult:
    for stale in (EXIT_CODE_FILE, GUEST_TIMEOUT_FILE):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / stale).unlink()
    started = time.monotonic()
    process = subprocess.Popen(
        [*_die_with_parent_prefix(), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    chunks: List[bytes] = []
    echo = _echo_console()

    def pump() -> None:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while True:
            data = os.read(fd, 65536)
            if not data:
                return
            chunks.append(data)
            if echo:
                sys.stderr.write(strip_console_noise(data))
                sys.stderr.flush()

    reader = threading.Thread(target=pump, name="qemu-console", daemon=True)
    reader.start()
    host_timed_out = False
    try:
        process.wait(timeout=timeout_sec)
    except subprocess.TimeoutExpired:
        host_timed_out = True
        process.kill()
        process.wait()
    reader.join(timeout=10)
    if process.stdout is not None:
        process.stdout.close()
    elapsed = time.monotonic() - started

    log = strip_console_noise(b"".join(chunks))
    if host_timed_out:
        log += f"\n[vm harness] host timeout after {timeout_sec:.0f}s: qemu killed\n"
    elif process.returncode not in (0, None):
        log += f"\n[vm harness] qemu exited with status {process.returncode}\n"
    guest_timed_out = (out_dir / GUEST_TIMEOUT_FILE).exists() or (
        f"REMEDIATOR-VM-GUEST-TIMEOUT {nonce}" in log
    )
    exit_code = None if host_timed_out or guest_timed_out else _read_exit_code(out_dir, log, nonce)
    with contextlib.suppress(OSError):
        (out_dir / CONSOLE_LOG_FILE).write_text(log)
    record_timing(f"{label} boot+run", elapsed)
    return VmResult(
        exit_code=exit_code,
        log=log,
        elapsed=elapsed,
        out_dir=out_dir,
        timed_out=host_timed_out or guest_timed_out,
        guest_timed_out=guest_timed_out and not host_timed_out,
    )


def guest_time_limit(timeout_sec: float, allowance_sec: float) -> int:
    """Seconds the guest's watchdog gives the command: what boot leaves of the host's limit."""
    return max(1, int(timeout_sec - allowance_sec))


# --------------------------------------------------------------------------- light shape


def paths_hidden_by_guest_tmpfs(paths: Sequence[Path]) -> List[str]:
    """Those of `paths` under /tmp or /run, which the guest covers with tmpfs."""
    hidden: List[str] = []
    for path in paths:
        text = str(Path(path).resolve())
        if any(text == top or text.startswith(top + "/") for top in ("/tmp", "/run")) and text not in hidden:
            hidden.append(text)
    return hidden


def _paths_the_command_needs() -> List[Path]:
    return [REPO_ROOT, Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]


def guest_command_script(command: str, *, term: str = "dumb") -> str:
    """The shell script the light guest runs (as root, chrooted, cwd = the repository)."""
    host_path = os.environ.get("PATH", "")
    path_entries = [entry for entry in host_path.split(":") if entry]
    for system_dir in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if system_dir not in path_entries:
            path_entries.append(system_dir)
    environment = {
        "PATH": ":".join(path_entries),
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "TERM": term,
        "VM_OUT": GUEST_OUT_DIR,
    }
    exports = "\n".join(f"export {key}={shlex.quote(value)}" for key, value in environment.items())
    return (
        "# Generated by tests/vm/harness.py for one light VM run.\n"
        f"{exports}\n"
        f"cd {shlex.quote(str(REPO_ROOT))} 2>/dev/null || cd /\n"
        f"{command}\n"
    )


def boot_light(
    command: str,
    *,
    timeout_sec: float,
    mem_mib: int = 1024,
    smp: int = 2,
    drives: Sequence[Drive] = (),
    out_dir: Path,
) -> VmResult:
    """Boot the light VM and run `command` as root in it; see the module docstring.

    Inside: the host's root read-only, cwd the repository, HOME=/tmp, tmpfs
    /tmp and /run, cgroup2 at /sys/fs/cgroup with memory, cpu, io and pids
    enabled for children, `out_dir` writable at /out ($VM_OUT), `drives` as
    /dev/vdb, /dev/vdc, ... (ext4 module loaded). The command gets
    `timeout_sec` minus LIGHT_BOOT_ALLOWANCE_SEC before the guest stops it;
    qemu is killed at `timeout_sec`.
    """
    return LightVm(ensure_light()).boot(
        command, timeout_sec=timeout_sec, mem_mib=mem_mib, smp=smp, drives=drives, out_dir=out_dir
    )


@dataclass(frozen=True)
class LightVm:
    """A built light kit; `boot` runs one command per VM."""

    kit: BootKit

    def boot(
        self,
        command: str,
        *,
        timeout_sec: float,
        mem_mib: int = 1024,
        smp: int = 2,
        drives: Sequence[Drive] = (),
        out_dir: Path,
        guest_limit_sec: Optional[int] = None,
    ) -> VmResult:
        """One VM running `command`; `guest_limit_sec` overrides the guest watchdog's share."""
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        nonce = secrets.token_hex(6)
        with tempfile.TemporaryDirectory(prefix="remediator-vm-ctl-") as control_name:
            control = Path(control_name)
            self._write_control(control, guest_command_script(command))
            argv = self._argv(
                control,
                out_dir=out_dir,
                nonce=nonce,
                mem_mib=mem_mib,
                smp=smp,
                drives=drives,
                guest_limit=guest_limit_sec or guest_time_limit(timeout_sec, LIGHT_BOOT_ALLOWANCE_SEC),
                interactive=False,
            )
            return _run_qemu(argv, timeout_sec=timeout_sec, out_dir=out_dir, nonce=nonce, label="light")

    def shell(self, *, mem_mib: int = 1024, smp: int = 2, out_dir: Path) -> int:
        """An interactive shell on this terminal; returns qemu's status."""
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="remediator-vm-ctl-") as control_name:
            control = Path(control_name)
            shell = "exec bash -i" if shutil.which("bash") else "exec sh -i"
            term = os.environ.get("TERM", "vt100")
            self._write_control(control, guest_command_script(shell, term=term))
            argv = self._argv(
                control,
                out_dir=out_dir,
                nonce="interactive",
                mem_mib=mem_mib,
                smp=smp,
                drives=(),
                guest_limit=0,
                interactive=True,
            )
            return subprocess.call(argv)

    @staticmethod
    def _write_control(control: Path, script: str) -> None:
        (control / "command.sh").write_text(script)
        kept = paths_hidden_by_guest_tmpfs(_paths_the_command_needs())
        (control / "keep-paths").write_text("".join(f"{path}\n" for path in kept))

    def _argv(
        self,
        control: Path,
        *,
        out_dir: Path,
        nonce: str,
        mem_mib: int,
        smp: int,
        drives: Sequence[Drive],
        guest_limit: int,
        interactive: bool,
    ) -> List[str]:
        append = [
            "rmd.shape=light",
            f"rmd.timeout={guest_limit}",
            f"rmd.nonce={nonce}",
            f"rmd.interactive={int(interactive)}",
            f"rmd.disk={int(bool(drives))}",
        ]
        argv = _qemu_base(self.kit, mem_mib=mem_mib, smp=smp, append=append, interactive=interactive)
        argv += _virtfs(Path("/"), "root", readonly=True)
        argv += _virtfs(control, "ctl", readonly=True)
        argv += _virtfs(out_dir, "out", readonly=False)
        if drives:
            # vda is the root disk in the full shape; reserving it here gives an
            # extra drive the same name in both shapes: vdb, vdc, ...
            argv += _virtio_drive(_reserved_vda(), snapshot=False, readonly=True)
        for drive in drives:
            if isinstance(drive, ReadOnlyDrive):
                argv += _virtio_drive(drive.path, snapshot=False, readonly=True)
            else:
                argv += _virtio_drive(Path(drive), snapshot=False)
        return argv


def make_ext4_image(path: Path, size_mib: int, files_dir: Optional[Path] = None) -> Path:
    """A sparse raw ext4 image, optionally filled from `files_dir` (mkfs.ext4 -d: no loop mount)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as image:
        image.truncate(size_mib * 1024 * 1024)
    argv = [_tool("mkfs.ext4"), "-q", "-F", "-L", "vmtest"]
    if files_dir is not None:
        argv += ["-d", str(files_dir)]
    _run([*argv, str(path)], what=f"mkfs.ext4 {path.name}")
    return path


# --------------------------------------------------------------------------- full shape

TEST_UNIT_TEXT = """[Unit]
Description=remediator VM test payload (tests/vm/harness.py)
# In [Unit], not [Service]: there they are ignored and the VM never stops.
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
# Not oneshot: a oneshot start job would keep `is-system-running --wait` waiting forever.
Type=simple
ExecStart=/usr/local/lib/remediator-vm/run-payload
StandardOutput=journal+console
StandardError=journal+console
# Guard; the initramfs writes the per-boot value into a drop-in.
RuntimeMaxSec=900

[Install]
WantedBy=multi-user.target
"""

RUN_PAYLOAD_SCRIPT = f"""#!/bin/sh
# Runs the host's payload (run.sh in the 9p share) once the system is up.
# Generated by tests/vm/harness.py: edit it there.
set -u
param() {{ sed -n "s/.*rmd\\.$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }}
NONCE=$(param nonce)
LIMIT=$(param timeout)
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 payload {GUEST_PAYLOAD_DIR} || {{
    echo "REMEDIATOR-VM-FAIL $NONCE cannot mount the payload share"
    exit 125
}}
echo "REMEDIATOR-VM-SYSTEM-STATE $(systemctl is-system-running --wait)"
cd {GUEST_PAYLOAD_DIR}
if [ "$(param interactive)" = 1 ]; then
    exec setsid -c -w /bin/bash -l <>/dev/ttyS0 >&0 2>&1
fi
timeout --kill-after=5 "$LIMIT" /bin/sh ./run.sh
rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "REMEDIATOR-VM-GUEST-TIMEOUT $NONCE ${{LIMIT}}s"
    echo "$LIMIT" > {GUEST_PAYLOAD_DIR}/{GUEST_TIMEOUT_FILE}
fi
journalctl --sync
journalctl -b -o json > {GUEST_PAYLOAD_DIR}/{JOURNAL_FILE}
echo "$rc" > {GUEST_PAYLOAD_DIR}/{EXIT_CODE_FILE}
sync
echo "REMEDIATOR-VM-EXIT $NONCE $rc"
exit "$rc"
"""


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses for the suite (deb822 or one-line sources)."""
    texts: List[str] = []
    for path in sorted(sources_dir.glob("sources.list.d/*.sources")):
        texts.extend(stanza for stanza in path.read_text().split("\n\n") if stanza.strip())
    for stanza in texts:
        uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
        suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
        if uris and suites and DEBIAN_SUITE in suites.group(1).split():
            return uris.group(1)
    one_line_files = [sources_dir / "sources.list", *sorted(sources_dir.glob("sources.list.d/*.list"))]
    for path in one_line_files:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if match and match.group(2) == DEBIAN_SUITE:
                return match.group(1)
    return DEFAULT_MIRROR


def full_image_key() -> str:
    digest = recipe_digest(
        FULL_IMAGE_PACKAGES,
        FULL_IMAGE_MASKED_UNITS,
        FULL_IMAGE_DISABLED_UNITS,
        TEST_UNIT_TEXT,
        RUN_PAYLOAD_SCRIPT,
        FULL_IMAGE_SIZE_MIB,
        FULL_IMAGE_MACHINE_ID,
    )
    return f"debian-{DEBIAN_SUITE}-{digest}"


def ensure_full_image() -> Path:
    """The raw ext4 image of the full shape (built once, kept zstd-compressed, restored once)."""
    _Apt.ensure_installed(LIGHT_HOST_PACKAGES + FULL_HOST_PACKAGES)
    directory = cache_root() / "full"
    key = full_image_key()
    raw = directory / f"{key}.raw"
    packed = directory / f"{key}.raw.zst"
    if raw.is_file():
        return raw
    started_all = time.monotonic()
    with _cache_lock(f"full-{key}"):
        if not packed.is_file():
            started = time.monotonic()
            _build_full_image(packed)
            record_timing("full image debootstrap+pack", time.monotonic() - started)
        if not raw.is_file():
            started = time.monotonic()
            partial = raw.with_suffix(".partial")
            _run(
                [_tool("zstd"), "-q", "-d", "-f", "--sparse", str(packed), "-o", str(partial)],
                what="zstd -d of the full image",
                timeout=300,
            )
            partial.replace(raw)
            record_timing("full image restore (zstd -d)", time.monotonic() - started)
    record_timing(f"full image ready: {key}", time.monotonic() - started_all)
    return raw


def _mounts_below(directory: Path) -> List[str]:
    prefix = str(directory.resolve()) + "/"
    mounts: List[str] = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mount_point = line.split()[1].replace("\\040", " ")
        if mount_point.startswith(prefix):
            mounts.append(mount_point)
    return mounts


def _remove_build_tree(directory: Path) -> None:
    """Delete a debootstrap tree, never through a mount debootstrap left behind (its /proc, /sys)."""
    if not directory.exists():
        return
    for mount_point in sorted(_mounts_below(directory), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], check=False, capture_output=True)
    leftover = _mounts_below(directory)
    if leftover:
        raise VmUnavailable(f"refusing to delete {directory}: still mounted: {leftover}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=False)


def _build_full_image(packed: Path) -> None:
    _require_root("debootstrap")
    packed.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    workdir = Path(tempfile.mkdtemp(prefix=".build-", dir=packed.parent))
    try:
        rootfs = workdir / "rootfs"
        _say(f"debootstrap {DEBIAN_SUITE} from {mirror} (about 70 s)")
        _run(
            [
                _tool("debootstrap"),
                "--variant=minbase",
                "--components=main",
                "--include=" + ",".join(FULL_IMAGE_PACKAGES),
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            what=f"debootstrap {DEBIAN_SUITE} (is {mirror} reachable?)",
            timeout=DEBOOTSTRAP_TIMEOUT_SEC,
        )
        for mount_point in sorted(_mounts_below(rootfs), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount_point], check=False, capture_output=True)
        customize_full_rootfs(rootfs)
        raw = workdir / "image.raw"
        make_ext4_image(raw, FULL_IMAGE_SIZE_MIB, files_dir=rootfs)
        partial = packed.with_suffix(".partial")
        _run(
            [_tool("zstd"), "-q", "-T0", "-f", str(raw), "-o", str(partial)],
            what="zstd of the full image",
            timeout=600,
        )
        partial.replace(packed)
    finally:
        _remove_build_tree(workdir)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def customize_full_rootfs(rootfs: Path) -> None:
    """Turn a debootstrapped tree into a VM that boots straight to the test unit."""
    _write(rootfs / "etc/hostname", "remediator-vm\n")
    _write(rootfs / "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 remediator-vm\n")
    # Root is mounted rw by the initramfs; no fsck pass on a snapshot image.
    _write(rootfs / "etc/fstab", "/dev/vda / ext4 rw,noatime 0 0\n")
    _write(rootfs / "etc/machine-id", FULL_IMAGE_MACHINE_ID + "\n", 0o444)
    _write(rootfs / "etc/systemd/journald.conf.d/90-remediator-vm.conf", "[Journal]\nStorage=volatile\n")
    systemd_dir = rootfs / "etc/systemd/system"
    for unit in FULL_IMAGE_MASKED_UNITS:
        _symlink(systemd_dir / unit, "/dev/null")
    for unit in FULL_IMAGE_DISABLED_UNITS:
        # The links point into the image (/lib/systemd/...): dangling here, so test with is_symlink.
        for wants in systemd_dir.glob("*.wants"):
            if (wants / unit).is_symlink():
                (wants / unit).unlink()
    _symlink(systemd_dir / "default.target", "/lib/systemd/system/multi-user.target")
    _write(systemd_dir / TEST_UNIT, TEST_UNIT_TEXT)
    _symlink(systemd_dir / "multi-user.target.wants" / TEST_UNIT, f"/etc/systemd/system/{TEST_UNIT}")
    _write(rootfs / "usr/local/lib/remediator-vm/run-payload", RUN_PAYLOAD_SCRIPT, 0o755)
    (rootfs / GUEST_PAYLOAD_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # Nothing in the VM can reach a mirror: drop the .debs and lists (size of the cache).
    for leftover in [
        *(rootfs / "var/cache/apt/archives").glob("*.deb"),
        *(rootfs / "var/lib/apt/lists").glob("*_*"),
    ]:
        leftover.unlink()


def boot_full(payload_dir: Path, *, timeout_sec: float, mem_mib: int = 1536) -> VmResult:
    """Boot Debian+systemd (snapshot=on) and run `payload_dir/run.sh` from the test unit.

    `payload_dir` is writable in the guest at /payload and is the working
    directory of run.sh (run as root by /bin/sh); afterwards it holds
    journal.json (`journalctl -b -o json`) and vm-console.log. run.sh gets
    `timeout_sec` minus FULL_BOOT_ALLOWANCE_SEC; qemu is killed at `timeout_sec`.
    """
    return FullVm(ensure_light(), ensure_full_image()).boot(
        payload_dir, timeout_sec=timeout_sec, mem_mib=mem_mib
    )


@dataclass(frozen=True)
class FullVm:
    """A built kit and full image; `boot` runs one payload per VM."""

    kit: BootKit
    image: Path
    smp: int = 2

    def boot(
        self,
        payload_dir: Path,
        *,
        timeout_sec: float,
        mem_mib: int = 1536,
        guest_limit_sec: Optional[int] = None,
    ) -> VmResult:
        """One VM running payload_dir/run.sh; `guest_limit_sec` overrides run.sh's share of the time."""
        payload_dir = Path(payload_dir).resolve()
        if not (payload_dir / "run.sh").is_file():
            raise ValueError(f"{payload_dir}/run.sh does not exist")
        with contextlib.suppress(FileNotFoundError):
            (payload_dir / JOURNAL_FILE).unlink()
        nonce = secrets.token_hex(6)
        argv = self._argv(
            payload_dir,
            nonce=nonce,
            mem_mib=mem_mib,
            guest_limit=guest_limit_sec or guest_time_limit(timeout_sec, FULL_BOOT_ALLOWANCE_SEC),
            interactive=False,
        )
        return _run_qemu(argv, timeout_sec=timeout_sec, out_dir=payload_dir, nonce=nonce, label="full")

    def shell(self, *, mem_mib: int = 1536, payload_dir: Path) -> int:
        payload_dir.mkdir(parents=True, exist_ok=True)
        (payload_dir / "run.sh").write_text("exit 0\n")
        argv = self._argv(payload_dir, nonce="interactive", mem_mib=mem_mib, guest_limit=0, interactive=True)
        return subprocess.call(argv)

    def _argv(
        self, payload_dir: Path, *, nonce: str, mem_mib: int, guest_limit: int, interactive: bool
    ) -> List[str]:
        append = [
            "rmd.shape=full",
            f"rmd.timeout={guest_limit}",
            f"rmd.nonce={nonce}",
            f"rmd.interactive={int(interactive)}",
        ]
        argv = _qemu_base(self.kit, mem_mib=mem_mib, smp=self.smp, append=append, interactive=interactive)
        argv += _virtio_drive(self.image, snapshot=True)
        argv += _virtfs(payload_dir, "payload", readonly=False)
        return argv


# --------------------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.harness", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="action", required=True)
    build = commands.add_parser("build", help="download and build the cache (kernel, initramfs, image)")
    build.add_argument("--full", action="store_true", help="also the Debian+systemd image")
    shell = commands.add_parser("shell", help="boot a VM with a root shell on this terminal (Ctrl-a x quits)")
    shell.add_argument("--full", action="store_true", help="the Debian+systemd shape")
    shell.add_argument("--mem", type=int, default=None, help="guest memory in MiB")
    arguments = parser.parse_args(argv)

    try:
        started = time.monotonic()
        kit = ensure_light()
        image = ensure_full_image() if arguments.full else None
        if arguments.action == "build":
            print(f"cache: {cache_root()}")
            print(f"kernel: {kit.kernel.kernel_image}\ninitramfs: {kit.initramfs}")
            if image is not None:
                print(f"full image: {image}")
            print(f"ready in {time.monotonic() - started:.1f}s")
            return 0
        scratch = Path(tempfile.mkdtemp(prefix="remediator-vm-shell-"))
        print(f"shared folder: {scratch} (/out or /payload in the guest); Ctrl-a x quits qemu", flush=True)
        if image is not None:
            return FullVm(kit, image).shell(mem_mib=arguments.mem or 1536, payload_dir=scratch)
        return LightVm(kit).shell(mem_mib=arguments.mem or 1024, out_dir=scratch)
    except VmUnavailable as exc:
        print(f"VM unavailable: {exc.reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
