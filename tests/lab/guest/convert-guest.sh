#!/usr/bin/env bash
# Makes the converted copy of the lab guest (cached): copy, `mk-guest convert`, rename.
# Usage: convert-guest.sh MK_GUEST IMAGE OUT
set -euo pipefail
mk_guest=$1 image=$2 out=$3
[[ -f "$out" ]] && exit 0
rm -f "$out.tmp"
cp --sparse=always "$image" "$out.tmp"
"$mk_guest" convert --name lab-guest "$out.tmp" || { rm -f "$out.tmp"; exit 1; }
mv "$out.tmp" "$out"
