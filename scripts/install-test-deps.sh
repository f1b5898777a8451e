#!/usr/bin/env bash
# Installs the Debian packages the test suite and benchmarks use (as root, or via sudo).
# Tests never install anything themselves: a missing tool fails its test with the package name.
set -euo pipefail
packages=(
  qemu-utils qemu-system-x86 qemu-block-extra   # qemu-img, qemu-io, qemu-nbd, qemu-storage-daemon, qemu-system-x86_64
  libnbd-bin nbdkit                              # nbdinfo, nbdcopy: independent NBD clients
  busybox-static cpio extlinux syslinux-common fdisk e2fsprogs   # the tiny bootable guest built at test setup
  restic borgbackup zstd time fio                    # benchmark peers
  postgresql                                     # the vault's persistence suite runs on PostgreSQL too
  openssh-server openssh-client                  # push install is tested against a real sshd
  iproute2 procps                                # ip netns, veth, bridge and sysctl for partition tests
  chromium                                       # the portal's browser tests (driven by playwright-core; no browser download)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# The guest build downloads a kernel package with apt-get download, which needs package lists.
if [ ${#missing[@]} -gt 0 ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
  $SUDO apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
