#!/usr/bin/env bash
# Test double for "nbdkit ... vddk ..." (VDDK is proprietary and absent here): records
# the command line it was given in $FAKE_VDDK_ARGS, insists that the password file named
# by password=+FILE is readable, and serves the disk it is asked for read-only on the -U
# socket with nbdkit's file plugin, in the foreground, as the real command would.
#
# Like VDDK, with snapshot=MOREF it reads the disk of that snapshot (file=NAME of
# vm=moref=VM), never the VM's current disk: the snapshots it knows are the files of
# $FAKE_VDDK_SNAPSHOTS, one per snapshot moref, one "VM<TAB>NAME<TAB>FLAT FILE" line per
# disk (the lab's CBT shim writes them: tests/lab/vcsim/cbt_shim.py --snapshot-index).
# A snapshot, VM or file it does not know fails the way VDDK's open does, before the
# socket exists.
#
# Without snapshot= it serves the VM's own disk, as VDDK opens the base disk of a
# powered-off VM: only when $FAKE_VDDK_SNAPSHOTS/power-VM says poweredOff (a running VM's
# disk is locked: VDDK's open fails; a VM whose power state the shim never saw is refused
# too), and the file "[DATASTORE] DIR/NAME.vmdk" is read from DIR/NAME-flat.vmdk in the
# datastore's directory as $FAKE_VDDK_SNAPSHOTS/datastores names it ("NAME<TAB>DIR"
# lines). The shim keeps both files (cbt_shim.py, "Power state for the VDDK stand-in").
#
# With $FAKE_VDDK_CLEANUP_SECONDS set it behaves like VDDK releasing a hot-add transport: on
# SIGTERM it takes that long to clean up, then touches "$FAKE_VDDK_ARGS.cleaned".
set -euo pipefail
printf '%s\n' "$@" >"$FAKE_VDDK_ARGS"
sock="" pwfile="" plugin="" vm="" snapshot="" file=""
while (($#)); do
  case "$1" in
    -U) sock="$2"; shift 2 ;;
    password=+*) pwfile="${1#password=+}"; shift ;;
    vm=moref=*) vm="${1#vm=moref=}"; shift ;;
    snapshot=*) snapshot="${1#snapshot=}"; shift ;;
    file=*) file="${1#file=}"; shift ;;
    vddk) plugin=vddk; shift ;;
    *) shift ;;
  esac
done
[[ "$plugin" == vddk ]] || { echo "fake nbdkit: not asked for the vddk plugin" >&2; exit 1; }
[[ -r "$pwfile" ]] || { echo "fake nbdkit: cannot read the password file '$pwfile'" >&2; exit 1; }
dir="${FAKE_VDDK_SNAPSHOTS:?fake nbdkit: FAKE_VDDK_SNAPSHOTS names no snapshot directory}"
flat=""
if [[ -z "$snapshot" ]]; then
  power=""
  if [[ -n "$vm" && "$vm" != */* && -f "$dir/power-$vm" ]]; then read -r power <"$dir/power-$vm" || true; fi
  if [[ "$power" != poweredOff ]]; then
    echo "fake nbdkit: vddk: VixDiskLib_Open: cannot open '$file' of VM '$vm' without a snapshot: the disk is" \
      "locked (the VM is ${power:-in a power state this host does not know}, not poweredOff)" >&2
    exit 1
  fi
  if [[ -f "$dir/datastores" && "$file" =~ ^\[([^]]+)\]\ ?(.+)\.vmdk$ && "${BASH_REMATCH[2]}" != *..* ]]; then
    ds="${BASH_REMATCH[1]}" rel="${BASH_REMATCH[2]}"
    while IFS=$'\t' read -r line_ds line_dir; do
      if [[ "$line_ds" == "$ds" ]]; then flat="$line_dir/$rel-flat.vmdk"; fi
    done <"$dir/datastores"
  fi
  if [[ -z "$flat" || ! -f "$flat" ]]; then
    echo "fake nbdkit: vddk: VixDiskLib_Open: file '$file' of VM '$vm' not found" >&2
    exit 1
  fi
else
  index="$dir/$snapshot"
  if [[ "$snapshot" == */* || ! -f "$index" ]]; then
    echo "fake nbdkit: vddk: VixDiskLib_Open: snapshot '$snapshot' of VM '$vm' not found" >&2
    exit 1
  fi
  while IFS=$'\t' read -r line_vm line_file line_flat; do
    if [[ "$line_vm" == "$vm" && "$line_file" == "$file" ]]; then flat="$line_flat"; fi
  done <"$index"
  if [[ -z "$flat" ]]; then
    echo "fake nbdkit: vddk: VixDiskLib_Open: file '$file' is not a disk of snapshot '$snapshot' of VM '$vm'" >&2
    exit 1
  fi
fi
if [[ -n "${FAKE_VDDK_CLEANUP_SECONDS:-}" ]]; then
  # The trap is set before nbdkit makes its socket: the reader may send SIGTERM as soon
  # as the socket is there.
  child=""
  trap 'sleep "$FAKE_VDDK_CLEANUP_SECONDS"; kill $child; wait; touch "$FAKE_VDDK_ARGS.cleaned"; exit 0' TERM
  nbdkit -f -r -U "$sock" file file="$flat" &
  child=$!
  wait "$child"
  exit
fi
exec nbdkit -f -r -U "$sock" file file="$flat"
