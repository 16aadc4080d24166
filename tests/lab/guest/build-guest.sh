#!/usr/bin/env bash
# Builds the lab's VMware-like Debian 12 guest: a raw 1.5 GiB MBR disk with one ext4
# partition, made from Debian packages only (debootstrap --variant=minbase from the apt
# mirror this machine is configured with; never a downloaded disk image).
#
# "VMware-like": the initramfs is built with MODULES=list and only the storage drivers a
# VMware VM needs (ata_piix, ahci, sd_mod, mptspi, vmw_pvscsi) and no virtio, so the guest
# boots on IDE/SATA/LSI/PVSCSI but not on a virtio disk until it is converted.
# The guest prints "MK-GUEST-BOOTED <target>" on its serial console (ttyS0) once its
# default target is reached, and keeps a persistent journal.
#
# Usage: build-guest.sh OUT.raw
# OUT.raw is written only when complete (build in OUT.raw.work/, rename at the end), so an
# interrupted build never leaves a half image under the cached name. The caller keys the
# name by this script's hash (see CMakeLists.txt), so an unchanged script costs nothing.
# Needs root (debootstrap, chroot), debootstrap, e2fsprogs, fdisk and libguestfs (GRUB is
# installed from inside the libguestfs appliance: loop partition devices do not appear on
# these machines). Env: MK_DEBIAN_MIRROR overrides the mirror; MK_DEB_CACHE keeps the
# downloaded .debs between builds.
set -euo pipefail

out=${1:?usage: build-guest.sh OUT.raw}
[[ -f "$out" ]] && exit 0
# One build at a time per image: `make test` starts one beside the compile, and the tests'
# fixture then waits here for it and finds the image made.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
[[ -f "$out" ]] && exit 0
here="$(cd "$(dirname "$0")" && pwd)"
work="$out.work"
cache=${MK_DEB_CACHE:-$(dirname "$out")/debs}
disk_mib=1536

mirror=$("$here/../../../scripts/debian-mirror" build-guest)

rm -rf "$work"
mkdir -p "$work" "$cache"
root="$work/root"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

echo "build-guest: debootstrap bookworm from $mirror"
# INITRD=No: the kernel's install does not make its own initramfs (every module, MODULES=most),
# which would be thrown away: the VMware-like one made below is the guest's only one.
INITRD=No debootstrap --variant=minbase --cache-dir="$cache" \
  --include=linux-image-amd64,systemd-sysv,grub-pc,initramfs-tools,udev,e2fsprogs \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; echo "build-guest: debootstrap failed" >&2; exit 1; }

uuid=$(cat /proc/sys/kernel/random/uuid)
echo mk-lab-guest >"$root/etc/hostname"
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$uuid" >"$root/etc/fstab"
mkdir -p "$root/var/log/journal"

# VMware-like initramfs: only the listed modules (plus their dependencies), no virtio.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' ata_piix ahci sd_mod mptspi vmw_pvscsi ext4 >>"$root/etc/initramfs-tools/modules"

# GRUB: no menu delay, kernel console on the serial port as well.
cat >"$root/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
GRUB_DISABLE_OS_PROBER=true
EOF

# The serial marker: one line once the default target is reached.
install -m 0644 "$here/mk-guest-booted.service" "$root/etc/systemd/system/"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf ../mk-guest-booted.service "$root/etc/systemd/system/multi-user.target.wants/"

kernels=("$root"/lib/modules/*)
[[ ${#kernels[@]} == 1 && -d ${kernels[0]} ]] || { echo "build-guest: expected one kernel in $root/lib/modules" >&2; exit 1; }
chroot "$root" update-initramfs -c -k "$(basename "${kernels[0]}")" >"$work/initramfs.log" 2>&1 ||
  { cat "$work/initramfs.log" >&2; exit 1; }
initrd=$(lsinitramfs "$root"/boot/initrd.img-*) || { echo "build-guest: no initramfs was made" >&2; exit 1; }
if ! grep -q '/ata_piix\.ko' <<<"$initrd" || grep -q virtio_blk <<<"$initrd"; then
  echo "build-guest: the initramfs must have the VMware-like drivers (ata_piix) and no virtio_blk" >&2
  exit 1
fi
rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
rm -rf "$root"/var/lib/apt/lists/*

# The disk: MBR, one bootable partition from 1 MiB, an ext4 made from the tree.
truncate -s "${disk_mib}M" "$work/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$work/disk.raw"
mkfs.ext4 -q -F -U "$uuid" -L root -d "$root" "$work/fs.raw" "$((disk_mib - 1))M"
dd if="$work/fs.raw" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$work/fs.raw"
rm -rf "$root"

# GRUB into the MBR and grub.cfg, run by the guest's own tools inside the appliance.
# `command` runs a program as it is, without libguestfs's translation of device names, and
# the appliance's own disk may be enumerated first (seen: the appliance /dev/sda, our disk
# /dev/sdb; grub-install /dev/sda then fails "embedding is not possible ... cross-disk
# install"): our disk is named by the ID libguestfs gives the first added drive.
export LIBGUESTFS_BACKEND=direct
[[ -n "${LIBGUESTFS_BACKEND_SETTINGS:-}" ]] || export LIBGUESTFS_BACKEND_SETTINGS=force_tcg
guestfish --format=raw -a "$work/disk.raw" -m /dev/sda1 <<'EOF' >"$work/grub.log" 2>&1 ||
command "grub-install --target=i386-pc /dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_hd0"
command "update-grub"
EOF
  { cat "$work/grub.log" >&2; echo "build-guest: installing GRUB failed" >&2; exit 1; }

mv "$work/disk.raw" "$out"
echo "build-guest: $out (root UUID $uuid)"
