#!/usr/bin/env bash
# A clean Debian 12 root for the upgrade test to install packages into: debootstrap
# --variant=minbase from the apt mirror this machine uses (scripts/debian-mirror, as the
# appliance images are made) with every dependency of the given .debs (all their
# versions' Depends, first of each alternative), so that `dpkg -i` of any of them needs
# no download. Cached as CACHE_DIR/root-HASH (HASH of the package list and the mirror);
# older roots are deleted. The root is never changed here: the test copies it.
#
#   base_root.sh CACHE_DIR DEB...      prints the root's path on its last line
# Needs root and debootstrap.
set -euo pipefail

cache=${1:?usage: base_root.sh CACHE_DIR DEB...}
shift
(($#)) || { echo "base_root: no .deb given" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "base_root: run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "base_root: debootstrap is missing: scripts/install-deps upgrade" >&2; exit 1; }
here="$(cd "$(dirname "$0")/../.." && pwd)"
mirror=$("$here/scripts/debian-mirror" base_root.sh)
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

deps=$(for d in "$@"; do dpkg-deb -f "$d" Depends; echo ,; done |
       tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v -E '^(migratekit.*)?$' | sort -u | paste -sd,)
key=$(printf '%s\n%s\n' "$deps" "$mirror" | sha256sum | cut -c1-16)
root="$cache/root-$key"
if [[ -f "$root.done" ]]; then
  echo "$root"
  exit 0
fi
find "$cache" -mindepth 1 -maxdepth 1 -name 'root-*' ! -name "root-$key*" -exec rm -rf --one-file-system {} +
rm -rf --one-file-system "$root"
mkdir -p "$cache/debs"
started=$(date +%s)
echo "base_root: debootstrap bookworm minbase from $mirror with $deps" >&2
debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$deps" bookworm "$root" "$mirror" \
  >"$cache/debootstrap.log" 2>&1 ||
  { tail -n 30 "$cache/debootstrap.log" "$root/debootstrap/debootstrap.log" >&2 || true
    echo "base_root: debootstrap failed (log: $cache/debootstrap.log)" >&2; exit 1; }
# No service starts inside the test's root when a package is installed (no init runs there:
# the test starts the OMA itself, as its unit would).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/cache/apt/archives/*.deb
touch "$root.done"
echo "base_root: made in $(($(date +%s) - started)) s ($(du -sh --one-file-system "$root" | cut -f1))" >&2
echo "$root"
