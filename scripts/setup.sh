#!/usr/bin/env bash
# Install everything ka, its lab and its tests need on a fresh Debian machine (run as root):
# system packages with apt-get, Python packages in a venv at ./.venv. (reiserfsprogs is left
# out on purpose: the tests then see ka refuse a reiserfs layout, naming the package.)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
packages=(
  fdisk util-linux mount e2fsprogs xfsprogs dosfstools btrfs-progs jfsutils mtools
  iproute2 kmod tar zstd acl attr libcap2-bin udpcast dnsmasq-base openssh-client
  python3-venv
  pxelinux syslinux-common grub-efi-amd64-bin ipxe busybox-static cpio tftp-hpa
  qemu-system-x86 ipxe-qemu ovmf debootstrap
  man-db
  gcc gcc-multilib make
  chromium chromium-driver
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/pip install -q -e '.[test]'
# ka(1) and a page per command, from the parsers, into .venv/share/man/man1: `man ka-clone`
# finds them with .venv/bin on PATH (or MANPATH=.venv/share/man:).
.venv/bin/ka man >/dev/null
# The golden Debian of the virtual machine lab (debootstrap from apt's mirror, once; cached in
# /var/cache/ka/lab): fetched here, with the packages, so that no test reaches beyond the lab.
.venv/bin/ka lab debian >/dev/null
echo "setup: ready (.venv/bin/ka)"
