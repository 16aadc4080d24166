#!/usr/bin/env bash
# Test double for "nbdkit ... vddk ..." (VDDK is proprietary and absent here): records
# the command line it was given in $FAKE_VDDK_ARGS, insists that the password file named
# by password=+FILE is readable, and serves $FAKE_VDDK_FLAT read-only on the -U socket
# with nbdkit's file plugin, in the foreground, as the real command would. With
# $FAKE_VDDK_CLEANUP_SECONDS set it behaves like VDDK releasing a hot-add transport: on
# SIGTERM it takes that long to clean up, then touches "$FAKE_VDDK_ARGS.cleaned".
set -euo pipefail
printf '%s\n' "$@" >"$FAKE_VDDK_ARGS"
sock="" pwfile="" plugin=""
while (($#)); do
  case "$1" in
    -U) sock="$2"; shift 2 ;;
    password=+*) pwfile="${1#password=+}"; shift ;;
    vddk) plugin=vddk; shift ;;
    *) shift ;;
  esac
done
[[ "$plugin" == vddk ]] || { echo "fake nbdkit: not asked for the vddk plugin" >&2; exit 1; }
[[ -r "$pwfile" ]] || { echo "fake nbdkit: cannot read the password file '$pwfile'" >&2; exit 1; }
if [[ -n "${FAKE_VDDK_CLEANUP_SECONDS:-}" ]]; then
  # The trap is set before nbdkit makes its socket: the reader may send SIGTERM as soon
  # as the socket is there.
  child=""
  trap 'sleep "$FAKE_VDDK_CLEANUP_SECONDS"; kill $child; wait; touch "$FAKE_VDDK_ARGS.cleaned"; exit 0' TERM
  nbdkit -f -r -U "$sock" file file="$FAKE_VDDK_FLAT" &
  child=$!
  wait "$child"
  exit
fi
exec nbdkit -f -r -U "$sock" file file="$FAKE_VDDK_FLAT"
