#!/usr/bin/env bash
# Host packages the real-kernel VM harness (tests/vm/harness.py) needs.
#
#   bash .ci/vm-deps.sh          light shape: qemu, busybox-static, e2fsprogs, xz; and the efficacy
#                                matrix's tools, fio and PostgreSQL 15 (the light VM runs the host's
#                                binaries: its root is the host's, read-only; bench/efficacy/vm.py)
#   bash .ci/vm-deps.sh --full   also debootstrap and zstd for the Debian+systemd image
#
# The harness installs whatever is missing by itself; this script lets CI do it
# up front, in one place, so a missing package fails loudly before any test runs.
# It only runs `apt-get update` when a package is actually missing, so a warm
# machine makes no network request here.
set -euo pipefail

packages=(qemu-system-x86 busybox-static e2fsprogs xz-utils fio postgresql-15)
if [[ "${1:-}" == "--full" ]]; then
    packages+=(debootstrap zstd)
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "vm-deps: all present: ${packages[*]}"
    exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
    echo "vm-deps: missing ${missing[*]} and not root: install them with apt-get" >&2
    exit 1
fi

echo "vm-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -o Acquire::Retries=2
# --no-install-recommends: qemu's recommends pull in a desktop stack the harness never uses.
apt-get install -y --no-install-recommends "${missing[@]}"
