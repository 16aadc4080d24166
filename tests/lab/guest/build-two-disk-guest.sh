#!/usr/bin/env bash
# Builds the lab's two-disk guest from the one-disk lab guest (build-guest.sh's image, so
# the same debootstrap tree and the same VMware-like initramfs): disk 0 is that image with
# /var emptied, disk 1 a new MBR disk with one ext4 partition that holds the old /var and
# is mounted on /var by UUID from /etc/fstab. A guest whose second disk is not there, or
# not mounted, does not reach its default target (the fstab entry has no nofail), and its
# journal (persistent, in /var/log/journal) is on the second disk.
#
# Usage: build-two-disk-guest.sh ONE_DISK.raw OUT_PREFIX
# Writes OUT_PREFIX-disk0.raw and OUT_PREFIX-disk1.raw, only when both are complete (built
# in OUT_PREFIX.work/, renamed at the end; disk1 last, so its presence means both are
# there). The caller keys OUT_PREFIX by the hashes of both builders (CMakeLists.txt), so an
# unchanged builder costs nothing. Needs libguestfs (guestfish); about 30 s under TCG.
set -euo pipefail

one=${1:?usage: build-two-disk-guest.sh ONE_DISK.raw OUT_PREFIX}
prefix=${2:?usage: build-two-disk-guest.sh ONE_DISK.raw OUT_PREFIX}
[[ -f "$prefix-disk0.raw" && -f "$prefix-disk1.raw" ]] && exit 0
[[ -f "$one" ]] || { echo "build-two-disk-guest: $one is missing (build-guest.sh makes it)" >&2; exit 1; }
work="$prefix.work"
var_mib=512

rm -rf "$work"
mkdir -p "$work"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

cp --sparse=always "$one" "$work/disk0.raw"
truncate -s "${var_mib}M" "$work/disk1.raw"
uuid=$(cat /proc/sys/kernel/random/uuid)

export LIBGUESTFS_BACKEND=direct
[[ -n "${LIBGUESTFS_BACKEND_SETTINGS:-}" ]] || export LIBGUESTFS_BACKEND_SETTINGS=force_tcg
# cp -a runs the guest's own cp inside its root (`command`), so owners, modes and links
# are kept as the guest made them.
guestfish --format=raw -a "$work/disk0.raw" -a "$work/disk1.raw" <<EOF >"$work/guestfish.log" 2>&1 ||
run
part-disk /dev/sdb mbr
mke2fs /dev/sdb1 fstype:ext4 uuid:$uuid label:var
mount /dev/sda1 /
mkdir /mnt-var
mount /dev/sdb1 /mnt-var
command "cp -a /var/. /mnt-var/"
write /mnt-var/lib/mk-lab-second-disk "the lab guest's /var, on its second disk\n"
umount /mnt-var
rmdir /mnt-var
glob rm-rf /var/*
write-append /etc/fstab "UUID=$uuid /var ext4 defaults 0 2\n"
EOF
  { cat "$work/guestfish.log" >&2; echo "build-two-disk-guest: guestfish failed" >&2; exit 1; }

mv "$work/disk0.raw" "$prefix-disk0.raw"
mv "$work/disk1.raw" "$prefix-disk1.raw"
echo "build-two-disk-guest: $prefix-disk0.raw $prefix-disk1.raw (/var UUID $uuid)"
